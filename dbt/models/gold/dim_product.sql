-- Products as SCD2: join facts on product_id and the fact's time within [valid_from, valid_to).
with

history as (
    select * from {{ ref('int_products_history') }}
),

final as (
    select
        product_sk,
        product_id,
        sku,
        product_name,
        category,
        perishable,
        shelf_life_days,
        cast(unit_cost as decimal(10, 2)) as unit_cost,
        cast(unit_price as decimal(10, 2)) as unit_price,
        safe_temp_max_c,
        valid_from,
        valid_to,
        is_current
    from history
)

select * from final
