-- Stock written off, one row per bronze row: codes trimmed and upper-cased; reason codes outside
-- the known list become UNKNOWN.
with

source as (
    select * from {{ source('bronze', 'waste') }}
),

final as (
    select
        upper(trim(waste_id)) as waste_id,
        upper(trim(store_id)) as store_id,
        upper(trim(product_id)) as product_id,
        waste_date,
        quantity,
        case
            when upper(trim(reason_code)) in ('EXPIRED', 'DAMAGED', 'TEMP_EXCURSION') then upper(trim(reason_code))
            else 'UNKNOWN'
        end as reason_code,
        upper(trim(device_id)) as device_id
    from source
)

select * from final
