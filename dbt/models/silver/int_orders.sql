-- Orders, one row per order: of the copies a till sent, the latest received (ingested_at) wins;
-- orders from store codes no store carries are dropped (stg_orders counts them in a test).
with

orders as (
    select * from {{ ref('stg_orders') }}
),

stores as (
    select * from {{ ref('stg_stores') }}
),

latest as (
    {{ latest_copy('orders', ['order_id'], 'ingested_at desc nulls last') }}
),

final as (
    select
        latest.order_id,
        latest.customer_id,
        latest.store_id,
        latest.order_ts,
        latest.order_date,
        latest.channel,
        latest.promo_code,
        latest.ingested_at,
        {{ dbt.datediff('latest.order_ts', 'latest.ingested_at', 'hour') }} >= 24 as is_late,
        cast(latest.copies_received as integer) as copies_received
    from latest
    inner join stores on latest.store_id = stores.store_id
)

select * from final
