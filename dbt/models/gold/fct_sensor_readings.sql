-- Readings per refrigeration unit per hour. Each reading stands for the interval until the next
-- one, the unit's cadence as its own readings show it (int_sensor_cadence: the median interval,
-- 15 minutes for the reference units); time above/below the safe range and time monitored count
-- such intervals.
with

readings as (
    select * from {{ ref('int_sensor_readings') }}
),

devices as (
    select * from {{ ref('dim_device') }}
),

cadence as (
    select * from {{ ref('int_sensor_cadence') }}
),

final as (
    select
        readings.device_id,
        devices.store_id,
        cast({{ dbt.date_trunc('hour', 'readings.reading_ts') }} as {{ timestamp_type() }}) as reading_hour,
        cast(count(*) as integer) as readings,
        cast(count(readings.temperature_c) as integer) as valid_readings,
        cast(sum(case when readings.is_sensor_error then 1 else 0 end) as integer) as sensor_errors,
        cast(avg(readings.temperature_c) as double) as avg_temp_c,
        cast(min(readings.temperature_c) as double) as min_temp_c,
        cast(max(readings.temperature_c) as double) as max_temp_c,
        cast(sum(case when readings.door_open then 1 else 0 end) as integer) as door_open_readings,
        cast(max(cadence.cadence_minutes) as double) as cadence_minutes,
        cast(round(count(readings.temperature_c) * max(cadence.cadence_minutes)) as integer) as minutes_monitored,
        cast(
            round(sum(case when readings.temperature_c > devices.safe_temp_max_c then cadence.cadence_minutes else 0 end))
            as integer
        ) as minutes_above_safe,
        cast(
            round(sum(case when readings.temperature_c < devices.safe_temp_min_c then cadence.cadence_minutes else 0 end))
            as integer
        ) as minutes_below_safe
    from readings
    inner join devices on readings.device_id = devices.device_id
    inner join cadence on readings.device_id = cadence.device_id
    group by 1, 2, 3
)

select * from final
