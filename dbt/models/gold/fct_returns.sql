with

returns as (
    select * from {{ ref('stg_returns') }}
),

sales as (
    select * from {{ ref('fct_sales') }}
),

final as (
    select
        returns.return_id,
        sales.sales_key,
        returns.order_id,
        cast(returns.line_number as integer) as line_number,
        cast(returns.return_ts as {{ timestamp_type() }}) as return_ts,
        cast(returns.return_ts as date) as return_date,
        returns.store_id,
        returns.product_id,
        cast(returns.quantity as integer) as quantity,
        returns.reason_code,
        cast(returns.quantity * sales.net_revenue / sales.quantity as decimal(14, 2)) as refund_amount
    from returns
    inner join sales
        on returns.order_id = sales.order_id
        and returns.line_number = sales.line_number
)

select * from final
