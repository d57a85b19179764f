-- One reading per refrigeration unit and time. A reading that arrived more than once (an upload
-- retried, a correction) keeps the copy received last, whatever its value: ingest_seq, which the
-- platform stamps on every write, orders the copies. Keeping the coldest copy, as silver once
-- did, hid excursions. Copies written before the platform stamped ingest_seq count as received
-- before any stamped copy; among themselves (their order is unknown) the warmest wins, the
-- choice that hides no excursion. Readings of units stg_devices does not carry are dropped
-- (counted by a test on stg_sensor_readings.device_id).
with

readings as (
    select * from {{ ref('stg_sensor_readings') }}
),

devices as (
    select * from {{ ref('stg_devices') }}
),

latest as (
    {{ latest_copy('readings', ['device_id', 'reading_ts'], 'ingest_seq desc nulls last, temperature_c desc nulls last') }}
),

final as (
    select
        latest.device_id,
        latest.store_id,
        latest.reading_ts,
        latest.temperature_c,
        latest.is_sensor_error,
        latest.door_open,
        latest.ingest_seq,
        cast(latest.copies_received as integer) as copies_received
    from latest
    inner join devices on latest.device_id = devices.device_id
)

select * from final
