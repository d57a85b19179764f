-- One row per order line, priced as sold, with the product and customer versions valid then.
with

lines as (
    select * from {{ ref('int_order_lines') }}
),

orders as (
    select * from {{ ref('int_orders') }}
),

products as (
    select * from {{ ref('dim_product') }}
),

customers as (
    select * from {{ ref('dim_customer') }}
),

joined as (
    select
        lines.order_id,
        lines.line_number,
        orders.order_ts,
        orders.order_date,
        orders.store_id,
        orders.channel,
        orders.customer_id,
        customers.customer_sk,
        lines.product_id,
        products.product_sk,
        lines.quantity,
        lines.unit_price,
        lines.discount_pct,
        products.unit_cost
    from lines
    inner join orders on lines.order_id = orders.order_id
    left join products
        on lines.product_id = products.product_id
        and orders.order_ts >= products.valid_from
        and (orders.order_ts < products.valid_to or products.valid_to is null)
    left join customers
        on orders.customer_id = customers.customer_id
        and orders.order_ts >= customers.valid_from
        and (orders.order_ts < customers.valid_to or customers.valid_to is null)
),

final as (
    select
        {{ hash_key(['order_id', 'line_number']) }} as sales_key,
        order_id,
        cast(line_number as integer) as line_number,
        cast(order_ts as {{ timestamp_type() }}) as order_ts,
        order_date,
        store_id,
        channel,
        customer_id,
        customer_sk,
        product_id,
        product_sk,
        cast(quantity as integer) as quantity,
        cast(unit_price as decimal(10, 2)) as unit_price,
        cast(discount_pct as decimal(5, 2)) as discount_pct,
        cast(quantity * unit_price as decimal(14, 2)) as gross_revenue,
        cast(quantity * unit_price * discount_pct / 100 as decimal(14, 2)) as discount_amount,
        cast(quantity * unit_price * (100 - discount_pct) / 100 as decimal(14, 2)) as net_revenue,
        cast(quantity * unit_cost as decimal(14, 2)) as cost_amount,
        cast(quantity * unit_price * (100 - discount_pct) / 100 - quantity * unit_cost as decimal(14, 2)) as margin,
        discount_pct > 0 as is_promo
    from joined
)

select * from final
