-- Orders, one row per order: re-sent copies collapse to the latest received, codes are
-- conformed, and orders from store codes no store carries are dropped.
with

source as (
    select * from {{ source('bronze', 'orders') }}
),

stores as (
    select * from {{ ref('stg_stores') }}
),

ranked as (
    select
        upper(trim(order_id)) as order_id,
        upper(trim(customer_id)) as customer_id,
        upper(trim(store_id)) as store_id,
        order_ts,
        lower(trim(channel)) as channel,
        nullif(trim(promo_code), '') as promo_code,
        ingested_at,
        row_number() over (partition by upper(trim(order_id)) order by ingested_at desc) as recency
    from source
),

final as (
    select
        ranked.order_id,
        ranked.customer_id,
        ranked.store_id,
        ranked.order_ts,
        cast(ranked.order_ts as date) as order_date,
        ranked.channel,
        ranked.promo_code,
        ranked.ingested_at,
        {{ dbt.datediff('ranked.order_ts', 'ranked.ingested_at', 'hour') }} >= 24 as is_late
    from ranked
    inner join stores on ranked.store_id = stores.store_id
    where ranked.recency = 1
)

select * from final
