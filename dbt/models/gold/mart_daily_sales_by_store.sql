with

sales as (
    select * from {{ ref('fct_sales') }}
),

returns as (
    select * from {{ ref('fct_returns') }}
),

stores as (
    select * from {{ ref('dim_store') }}
),

daily_sales as (
    select
        order_date as date_day,
        store_id,
        count(distinct order_id) as orders,
        sum(quantity) as units,
        sum(net_revenue) as net_revenue,
        sum(margin) as margin,
        sum(case when is_promo then net_revenue else 0 end) as promo_revenue
    from sales
    group by 1, 2
),

daily_returns as (
    select return_date as date_day, store_id, sum(quantity) as returned_units, sum(refund_amount) as refunds
    from returns
    group by 1, 2
),

final as (
    select
        daily_sales.date_day,
        daily_sales.store_id,
        stores.region_id,
        cast(daily_sales.orders as bigint) as orders,
        cast(daily_sales.units as bigint) as units,
        cast(daily_sales.net_revenue as decimal(16, 2)) as net_revenue,
        cast(daily_sales.margin as decimal(16, 2)) as margin,
        cast(daily_sales.promo_revenue as decimal(16, 2)) as promo_revenue,
        cast(coalesce(daily_returns.returned_units, 0) as bigint) as returned_units,
        cast(coalesce(daily_returns.refunds, 0) as decimal(16, 2)) as refunds,
        cast(daily_sales.net_revenue / daily_sales.orders as decimal(12, 2)) as avg_basket
    from daily_sales
    left join stores on daily_sales.store_id = stores.store_id
    left join daily_returns
        on daily_sales.date_day = daily_returns.date_day
        and daily_sales.store_id = daily_returns.store_id
)

select * from final
