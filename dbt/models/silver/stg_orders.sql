-- Order headers, one row per bronze row (re-sent copies included): codes trimmed and cased,
-- channel lower-cased, an empty promotion code is none. int_orders keeps one copy per order.
with

source as (
    select * from {{ source('bronze', 'orders') }}
),

final as (
    select
        upper(trim(order_id)) as order_id,
        upper(trim(customer_id)) as customer_id,
        upper(trim(store_id)) as store_id,
        order_ts,
        cast(order_ts as date) as order_date,
        lower(trim(channel)) as channel,
        nullif(trim(promo_code), '') as promo_code,
        ingested_at
    from source
)

select * from final
