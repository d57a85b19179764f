-- Order lines of kept orders, one row per (order, line); lines without a quantity are dropped.
with

source as (
    select * from {{ source('bronze', 'order_lines') }}
),

orders as (
    select * from {{ ref('stg_orders') }}
),

ranked as (
    select
        upper(trim(order_id)) as order_id,
        line_number,
        upper(trim(product_id)) as product_id,
        quantity,
        unit_price,
        coalesce(discount_pct, 0) as discount_pct,
        ingested_at,
        row_number() over (partition by upper(trim(order_id)), line_number order by ingested_at desc) as recency
    from source
),

final as (
    select
        ranked.order_id,
        ranked.line_number,
        orders.store_id,
        ranked.product_id,
        ranked.quantity,
        ranked.unit_price,
        ranked.discount_pct
    from ranked
    inner join orders on ranked.order_id = orders.order_id
    where ranked.recency = 1 and ranked.quantity is not null and ranked.quantity > 0
)

select * from final
