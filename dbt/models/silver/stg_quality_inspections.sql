-- Quality checks of products on the shelf, one row per bronze row: codes trimmed and upper-cased.
with

source as (
    select * from {{ source('bronze', 'quality_inspections') }}
),

final as (
    select
        upper(trim(inspection_id)) as inspection_id,
        upper(trim(store_id)) as store_id,
        upper(trim(product_id)) as product_id,
        inspected_ts,
        score,
        passed,
        trim(inspector) as inspector
    from source
)

select * from final
