with

stores as (
    select * from {{ ref('stg_stores') }}
),

regions as (
    select * from {{ ref('stg_regions') }}
),

final as (
    select
        stores.store_id,
        stores.store_name,
        stores.city,
        stores.region_id,
        regions.region_name,
        regions.country,
        stores.opened_date,
        stores.square_meters
    from stores
    left join regions on stores.region_id = regions.region_id
)

select * from final
