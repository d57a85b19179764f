-- Returned order lines, one row per bronze row: codes trimmed and upper-cased.
with

source as (
    select * from {{ source('bronze', 'returns') }}
),

final as (
    select
        upper(trim(return_id)) as return_id,
        upper(trim(order_id)) as order_id,
        line_number,
        upper(trim(store_id)) as store_id,
        upper(trim(product_id)) as product_id,
        return_ts,
        quantity,
        upper(trim(reason_code)) as reason_code
    from source
)

select * from final
