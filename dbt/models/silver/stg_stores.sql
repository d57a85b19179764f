-- Stores, one row per bronze row: codes trimmed and upper-cased, names trimmed.
with

source as (
    select * from {{ source('bronze', 'stores') }}
),

final as (
    select
        upper(trim(store_id)) as store_id,
        upper(trim(region_id)) as region_id,
        trim(store_name) as store_name,
        trim(city) as city,
        opened_date,
        square_meters
    from source
)

select * from final
