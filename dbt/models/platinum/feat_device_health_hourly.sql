-- Device-health features: one row per refrigeration unit x hour, with recent history and the
-- label a model learns: whether the unit goes above its safe maximum within the next 6 hours.
with

hourly as (
    select * from {{ ref('fct_sensor_readings') }}
),

devices as (
    select * from {{ ref('dim_device') }}
),

final as (
    select
        hourly.device_id,
        hourly.store_id,
        devices.device_type,
        hourly.reading_hour,
        cast(hour(hourly.reading_hour) as integer) as hour_of_day,
        hourly.avg_temp_c,
        hourly.min_temp_c,
        hourly.max_temp_c,
        hourly.avg_temp_c - devices.safe_temp_max_c as margin_to_safe_max_c,
        cast(hourly.door_open_readings as double) / nullif(hourly.readings, 0) as door_open_ratio,
        hourly.sensor_errors,
        hourly.minutes_above_safe,
        cast(avg(hourly.avg_temp_c) over (w rows between 6 preceding and 1 preceding) as double) as avg_temp_6h,
        cast(avg(hourly.avg_temp_c) over (w rows between 24 preceding and 1 preceding) as double) as avg_temp_24h,
        cast(
            hourly.avg_temp_c - avg(hourly.avg_temp_c) over (w rows between 24 preceding and 1 preceding) as double
        ) as temp_delta_vs_24h,
        cast(max(hourly.max_temp_c) over (w rows between 3 preceding and current row) as double) as max_temp_4h,
        cast(sum(hourly.minutes_above_safe) over (w rows between 24 preceding and 1 preceding) as integer)
            as minutes_above_safe_24h,
        coalesce(max(hourly.minutes_above_safe) over (w rows between 1 following and 6 following), 0) > 0
            as label_excursion_next_6h
    from hourly
    inner join devices on hourly.device_id = devices.device_id
    window w as (partition by hourly.device_id order by hourly.reading_hour)
)

select * from final
