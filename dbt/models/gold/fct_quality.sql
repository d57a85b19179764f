with

inspections as (
    select * from {{ ref('stg_quality_inspections') }}
),

final as (
    select
        inspection_id,
        cast(inspected_ts as {{ timestamp_type() }}) as inspected_ts,
        cast(inspected_ts as date) as inspected_date,
        store_id,
        product_id,
        cast(score as integer) as score,
        passed,
        inspector
    from inspections
)

select * from final
