-- One row per customer: current attributes and lifetime behaviour.
with

customers as (
    select * from {{ ref('dim_customer') }} where is_current
),

sales as (
    select * from {{ ref('fct_sales') }} where customer_id is not null
),

orders as (
    select
        customer_id,
        count(distinct order_id) as orders,
        sum(net_revenue) as net_revenue,
        min(order_date) as first_order_date,
        max(order_date) as last_order_date
    from sales
    group by 1
),

store_visits as (
    select
        customer_id,
        store_id,
        row_number() over (partition by customer_id order by count(distinct order_id) desc, store_id) as visit_rank
    from sales
    group by 1, 2
),

returns as (
    select sales.customer_id, sum(r.quantity) as returned_units
    from {{ ref('fct_returns') }} as r
    inner join sales on r.sales_key = sales.sales_key
    group by 1
),

final as (
    select
        customers.customer_id,
        customers.full_name,
        customers.email,
        customers.email_token,
        customers.city,
        customers.home_store_id,
        store_visits.store_id as preferred_store_id,
        cast(coalesce(orders.orders, 0) as bigint) as orders,
        cast(coalesce(orders.net_revenue, 0) as decimal(16, 2)) as lifetime_revenue,
        cast(orders.net_revenue / nullif(orders.orders, 0) as decimal(12, 2)) as avg_order_value,
        orders.first_order_date,
        orders.last_order_date,
        cast(coalesce(returns.returned_units, 0) as bigint) as returned_units
    from customers
    left join orders on customers.customer_id = orders.customer_id
    left join store_visits on customers.customer_id = store_visits.customer_id and store_visits.visit_rank = 1
    left join returns on customers.customer_id = returns.customer_id
)

select * from final
