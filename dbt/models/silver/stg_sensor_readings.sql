-- Temperature readings, one row per bronze row (copies sent again included): codes trimmed and
-- upper-cased; probe sentinels and impossible values become NULL temperatures flagged as sensor
-- errors, so they never count as excursions. int_sensor_readings keeps one copy per reading.
with

source as (
    select * from {{ source('bronze', 'sensor_readings') }}
),

final as (
    select
        upper(trim(device_id)) as device_id,
        upper(trim(store_id)) as store_id,
        reading_ts,
        case
            when temperature_c between {{ var('sensor_error_below_c') }} and {{ var('sensor_error_above_c') }}
                then temperature_c
        end as temperature_c,
        temperature_c is null
            or temperature_c not between {{ var('sensor_error_below_c') }} and {{ var('sensor_error_above_c') }}
            as is_sensor_error,
        coalesce(door_open, false) as door_open,
        ingest_seq
    from source
)

select * from final
