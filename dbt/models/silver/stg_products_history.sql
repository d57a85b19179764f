-- SCD2 history of the product master: one row per version, valid from its updated_at until the
-- next version's. Re-sent identical versions collapse to one.
with

source as (
    select * from {{ source('bronze', 'products') }}
),

versions as (
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
        updated_at,
        row_number() over (partition by upper(trim(product_id)), updated_at order by unit_price) as copy_number
    from source
),

final as (
    select
        {{ hash_key(['product_id', 'updated_at']) }} as product_sk,
        product_id,
        sku,
        product_name,
        category,
        perishable,
        shelf_life_days,
        unit_cost,
        unit_price,
        safe_temp_max_c,
        updated_at as valid_from,
        lead(updated_at) over (partition by product_id order by updated_at) as valid_to,
        lead(updated_at) over (partition by product_id order by updated_at) is null as is_current
    from versions
    where copy_number = 1
)

select * from final
