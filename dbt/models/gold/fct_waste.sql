-- Stock written off, one row per write-off with a positive quantity, costed at the product
-- version valid on the day.
with

waste as (
    select * from {{ ref('stg_waste') }}
),

products as (
    select * from {{ ref('dim_product') }}
),

final as (
    select
        waste.waste_id,
        waste.waste_date,
        waste.store_id,
        waste.product_id,
        products.product_sk,
        waste.device_id,
        cast(waste.quantity as integer) as quantity,
        waste.reason_code,
        cast(waste.quantity * products.unit_cost as decimal(14, 2)) as waste_cost
    from waste
    left join products
        on waste.product_id = products.product_id
        and cast(waste.waste_date as {{ timestamp_type() }}) >= products.valid_from
        and (cast(waste.waste_date as {{ timestamp_type() }}) < products.valid_to or products.valid_to is null)
    where waste.quantity > 0
)

select * from final
