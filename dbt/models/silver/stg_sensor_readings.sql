-- One reading per (device, time); probe sentinels and impossible values become null temperatures
-- flagged as sensor errors, so they never count as excursions.
with

source as (
    select * from {{ source('bronze', 'sensor_readings') }}
),

ranked as (
    select
        upper(trim(device_id)) as device_id,
        upper(trim(store_id)) as store_id,
        reading_ts,
        temperature_c,
        door_open,
        row_number() over (partition by upper(trim(device_id)), reading_ts order by temperature_c) as copy_number
    from source
),

final as (
    select
        device_id,
        store_id,
        reading_ts,
        case
            when temperature_c between {{ var('sensor_error_below_c') }} and {{ var('sensor_error_above_c') }}
                then temperature_c
        end as temperature_c,
        temperature_c is null
            or temperature_c not between {{ var('sensor_error_below_c') }} and {{ var('sensor_error_above_c') }}
            as is_sensor_error,
        coalesce(door_open, false) as door_open
    from ranked
    where copy_number = 1
)

select * from final
