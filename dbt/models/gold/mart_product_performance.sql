with

products as (
    select * from {{ ref('dim_product') }} where is_current
),

sales as (
    select product_id, sum(quantity) as units, sum(net_revenue) as net_revenue, sum(margin) as margin
    from {{ ref('fct_sales') }}
    group by 1
),

returns as (
    select product_id, sum(quantity) as returned_units
    from {{ ref('fct_returns') }}
    group by 1
),

waste as (
    select product_id, sum(quantity) as waste_units, sum(waste_cost) as waste_cost
    from {{ ref('fct_waste') }}
    group by 1
),

final as (
    select
        products.product_id,
        products.product_name,
        products.category,
        products.perishable,
        cast(coalesce(sales.units, 0) as bigint) as units_sold,
        cast(coalesce(sales.net_revenue, 0) as decimal(16, 2)) as net_revenue,
        cast(coalesce(sales.margin, 0) as decimal(16, 2)) as margin,
        cast(coalesce(returns.returned_units, 0) as bigint) as returned_units,
        cast(coalesce(waste.waste_units, 0) as bigint) as waste_units,
        cast(coalesce(waste.waste_cost, 0) as decimal(16, 2)) as waste_cost,
        cast(coalesce(returns.returned_units, 0) as double) / nullif(sales.units, 0) as return_rate,
        cast(coalesce(waste.waste_units, 0) as double)
            / nullif(coalesce(sales.units, 0) + coalesce(waste.waste_units, 0), 0) as waste_rate
    from products
    left join sales on products.product_id = sales.product_id
    left join returns on products.product_id = returns.product_id
    left join waste on products.product_id = waste.product_id
)

select * from final
