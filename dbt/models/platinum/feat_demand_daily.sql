-- Demand-forecasting features: one row per store x product x day on a zero-filled day grid
-- (every store, every current product, every day of dim_date), so windows of rows are windows of
-- days. Lags and rolling means use only the days before the row's day; the day's own sales,
-- revenue, waste and promotion are what happened that day (targets, never inputs to its features).
with

dates as (
    select * from {{ ref('dim_date') }}
),

stores as (
    select store_id from {{ ref('dim_store') }}
),

products as (
    select product_id, category, perishable, shelf_life_days from {{ ref('dim_product') }} where is_current
),

sales as (
    select
        store_id,
        product_id,
        order_date as date_day,
        sum(quantity) as units,
        sum(net_revenue) as net_revenue,
        max(discount_pct) as discount_pct
    from {{ ref('fct_sales') }}
    group by 1, 2, 3
),

waste as (
    select store_id, product_id, waste_date as date_day, sum(quantity) as units
    from {{ ref('fct_waste') }}
    group by 1, 2, 3
),

grid as (
    select
        stores.store_id,
        products.product_id,
        products.category,
        products.perishable,
        products.shelf_life_days,
        dates.date_day,
        dates.iso_day_of_week,
        dates.day_of_year,
        dates.is_weekend
    from stores
    cross join products
    cross join dates
),

daily as (
    select
        grid.*,
        coalesce(sales.units, 0) as units_sold,
        coalesce(sales.net_revenue, 0) as net_revenue,
        coalesce(sales.discount_pct, 0) as discount_pct,
        coalesce(waste.units, 0) as waste_units
    from grid
    left join sales
        on grid.store_id = sales.store_id and grid.product_id = sales.product_id and grid.date_day = sales.date_day
    left join waste
        on grid.store_id = waste.store_id and grid.product_id = waste.product_id and grid.date_day = waste.date_day
),

final as (
    select
        store_id,
        product_id,
        date_day,
        category,
        perishable,
        cast(shelf_life_days as integer) as shelf_life_days,
        iso_day_of_week,
        day_of_year,
        is_weekend,
        discount_pct > 0 as is_promo,
        cast(discount_pct as decimal(5, 2)) as discount_pct,
        cast(units_sold as bigint) as units_sold,
        cast(net_revenue as decimal(14, 2)) as net_revenue,
        cast(waste_units as bigint) as waste_units,
        cast(lag(units_sold, 1) over w as bigint) as units_lag_1d,
        cast(lag(units_sold, 7) over w as bigint) as units_lag_7d,
        cast(avg(units_sold) over (w rows between 7 preceding and 1 preceding) as double) as units_avg_7d,
        cast(avg(units_sold) over (w rows between 28 preceding and 1 preceding) as double) as units_avg_28d,
        cast(sum(waste_units) over (w rows between 7 preceding and 1 preceding) as bigint) as waste_units_7d
    from daily
    window w as (partition by store_id, product_id order by date_day)
)

select * from final
