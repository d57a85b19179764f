-- The product master's change log, one row per bronze row: codes trimmed, category lower-cased.
-- Copies and versions stay: int_products_history turns them into SCD2 versions.
with

source as (
    select * from {{ source('bronze', 'products') }}
),

final as (
    select
        upper(trim(product_id)) as product_id,
        trim(sku) as sku,
        trim(product_name) as product_name,
        lower(trim(category)) as category,
        perishable,
        shelf_life_days,
        unit_cost,
        unit_price,
        safe_temp_max_c,
        updated_at
    from source
)

select * from final
