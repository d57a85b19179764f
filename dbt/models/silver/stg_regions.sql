-- Sales regions, one row per bronze row: codes trimmed and upper-cased.
with

source as (
    select * from {{ source('bronze', 'regions') }}
),

final as (
    select
        upper(trim(region_id)) as region_id,
        trim(region_name) as region_name,
        upper(trim(country)) as country
    from source
)

select * from final
