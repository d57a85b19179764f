-- Readings per refrigeration unit per hour. Each reading stands for the interval until the next
-- one (15 minutes); minutes above/below the unit's safe range count those intervals.
with

readings as (
    select * from {{ ref('stg_sensor_readings') }}
),

devices as (
    select * from {{ ref('dim_device') }}
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
        cast(15 * sum(case when readings.temperature_c > devices.safe_temp_max_c then 1 else 0 end) as integer)
            as minutes_above_safe,
        cast(15 * sum(case when readings.temperature_c < devices.safe_temp_min_c then 1 else 0 end) as integer)
            as minutes_below_safe
    from readings
    inner join devices on readings.device_id = devices.device_id
    group by 1, 2, 3
)

select * from final
