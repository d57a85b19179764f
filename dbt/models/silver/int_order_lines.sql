-- Order lines, one row per (order, line): of the copies a till sent, the latest received wins;
-- lines of orders int_orders does not keep, and lines without a quantity, are dropped.
with

lines as (
    select * from {{ ref('stg_order_lines') }}
),

orders as (
    select * from {{ ref('int_orders') }}
),

latest as (
    {{ latest_copy('lines', ['order_id', 'line_number'], 'ingested_at desc nulls last') }}
),

final as (
    select
        latest.order_id,
        latest.line_number,
        orders.store_id,
        latest.product_id,
        latest.quantity,
        latest.unit_price,
        latest.discount_pct
    from latest
    inner join orders on latest.order_id = orders.order_id
    where latest.quantity > 0
)

select * from final
