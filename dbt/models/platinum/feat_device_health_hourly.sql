-- Device-health features: one row per refrigeration unit and hour of its reporting span, on a
-- zero-filled hour spine: an hour in which the unit sent nothing still has its row (readings 0,
-- no temperatures), so a window of 6 rows is 6 hours. A row is what is known when its hour
-- closes: the hour's own readings and windows over the hours before it. The label a model learns
-- looks only after it: whether the unit goes above its safe maximum within the next 6 hours.
with

hourly as (
    select * from {{ ref('fct_sensor_readings') }}
),

devices as (
    select * from {{ ref('dim_device') }}
),

spans as (
    select
        device_id,
        min(reading_hour) as first_hour,
        max(reading_hour) as last_hour
    from hourly
    group by device_id
),

bounds as (
    select
        min(first_hour) as first_hour,
        max(last_hour) as last_hour
    from spans
),

hours as (
    {{ hour_spine('bounds') }}
),

spine as (
    select
        spans.device_id,
        cast(hours.spine_hour as {{ timestamp_type() }}) as reading_hour
    from spans
    inner join hours
        on hours.spine_hour >= spans.first_hour
        and hours.spine_hour <= spans.last_hour
),

filled as (
    select
        spine.device_id,
        spine.reading_hour,
        coalesce(hourly.readings, 0) as readings,
        hourly.avg_temp_c,
        hourly.min_temp_c,
        hourly.max_temp_c,
        coalesce(hourly.door_open_readings, 0) as door_open_readings,
        coalesce(hourly.sensor_errors, 0) as sensor_errors,
        coalesce(hourly.minutes_above_safe, 0) as minutes_above_safe
    from spine
    left join hourly
        on spine.device_id = hourly.device_id
        and spine.reading_hour = hourly.reading_hour
),

final as (
    select
        filled.device_id,
        devices.store_id,
        devices.device_type,
        filled.reading_hour,
        cast(hour(filled.reading_hour) as integer) as hour_of_day,
        cast(filled.readings as integer) as readings,
        filled.avg_temp_c,
        filled.min_temp_c,
        filled.max_temp_c,
        filled.avg_temp_c - devices.safe_temp_max_c as margin_to_safe_max_c,
        cast(filled.door_open_readings as double) / nullif(filled.readings, 0) as door_open_ratio,
        cast(filled.sensor_errors as integer) as sensor_errors,
        cast(filled.minutes_above_safe as integer) as minutes_above_safe,
        cast(avg(filled.avg_temp_c) over (w rows between 6 preceding and 1 preceding) as double) as avg_temp_6h,
        cast(avg(filled.avg_temp_c) over (w rows between 24 preceding and 1 preceding) as double) as avg_temp_24h,
        cast(
            filled.avg_temp_c - avg(filled.avg_temp_c) over (w rows between 24 preceding and 1 preceding) as double
        ) as temp_delta_vs_24h,
        cast(max(filled.max_temp_c) over (w rows between 3 preceding and current row) as double) as max_temp_4h,
        cast(sum(filled.minutes_above_safe) over (w rows between 24 preceding and 1 preceding) as integer)
            as minutes_above_safe_24h,
        coalesce(max(filled.minutes_above_safe) over (w rows between 1 following and 6 following), 0) > 0
            as label_excursion_next_6h
    from filled
    inner join devices on filled.device_id = devices.device_id
    window w as (partition by filled.device_id order by filled.reading_hour)
)

select * from final
