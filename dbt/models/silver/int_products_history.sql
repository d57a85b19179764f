-- SCD2 history of the product master: a version opens when a product's price or cost changes;
-- rows that change neither (sent again, or changing untracked attributes) open none.
with

products as (
    select * from {{ ref('stg_products') }}
),

versions as (
    {{ scd2('products', 'product_id', 'updated_at', ['unit_price', 'unit_cost'], 'unit_price, unit_cost') }}
),

final as (
    select
        {{ hash_key(['product_id', 'valid_from']) }} as product_sk,
        product_id,
        sku,
        product_name,
        category,
        perishable,
        shelf_life_days,
        unit_cost,
        unit_price,
        safe_temp_max_c,
        valid_from,
        valid_to,
        is_current
    from versions
)

select * from final
