-- Deliveries to stores, one row per bronze row: codes trimmed and upper-cased.
with

source as (
    select * from {{ source('bronze', 'shipments') }}
),

final as (
    select
        upper(trim(shipment_id)) as shipment_id,
        upper(trim(store_id)) as store_id,
        upper(trim(product_id)) as product_id,
        shipped_ts,
        received_ts,
        received_ts is null as is_in_transit,
        quantity,
        trim(carrier) as carrier,
        max_transit_temp_c
    from source
)

select * from final
