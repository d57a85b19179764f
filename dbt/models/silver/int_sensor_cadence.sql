-- How often each refrigeration unit reports, as its own readings show: the median interval between
-- consecutive readings. Lost readings and outages lengthen a few intervals and leave the median
-- alone. A unit with a single reading takes the fleet's median interval.
with

readings as (
    select * from {{ ref('int_sensor_readings') }}
),

previous as (
    select
        device_id,
        reading_ts,
        lag(reading_ts) over (partition by device_id order by reading_ts) as previous_reading_ts
    from readings
),

intervals as (
    select
        device_id,
        cast({{ dbt.datediff('previous_reading_ts', 'reading_ts', 'second') }} as double) / 60 as interval_minutes
    from previous
    where previous_reading_ts is not null
),

units as (
    select
        device_id,
        count(*) as readings,
        min(reading_ts) as first_reading_ts,
        max(reading_ts) as last_reading_ts
    from readings
    group by device_id
),

unit_cadence as (
    select
        device_id,
        {{ median('interval_minutes') }} as cadence_minutes
    from intervals
    group by device_id
),

fleet_cadence as (
    select {{ median('interval_minutes') }} as cadence_minutes
    from intervals
),

final as (
    select
        units.device_id,
        cast(units.readings as bigint) as readings,
        units.first_reading_ts,
        units.last_reading_ts,
        cast(coalesce(unit_cadence.cadence_minutes, fleet_cadence.cadence_minutes) as double) as cadence_minutes,
        unit_cadence.cadence_minutes is null as is_fleet_cadence
    from units
    left join unit_cadence on units.device_id = unit_cadence.device_id
    cross join fleet_cadence
)

select * from final
