-- Order lines, one row per bronze row (lines of re-sent orders included): codes trimmed and
-- upper-cased, a missing discount is none. int_order_lines keeps one copy per line.
with

source as (
    select * from {{ source('bronze', 'order_lines') }}
),

final as (
    select
        upper(trim(order_id)) as order_id,
        line_number,
        upper(trim(store_id)) as store_id,
        upper(trim(product_id)) as product_id,
        quantity,
        unit_price,
        coalesce(discount_pct, 0) as discount_pct,
        ingested_at
    from source
)

select * from final
