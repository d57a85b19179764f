-- Cold-chain compliance per refrigeration unit per day: the time its temperature was above the
-- safe maximum, the share of monitored time in range, and the waste blamed on temperature. Times
-- are readings times the unit's cadence (fct_sensor_readings), never a fixed interval.
with

hourly as (
    select * from {{ ref('fct_sensor_readings') }}
),

devices as (
    select * from {{ ref('dim_device') }}
),

waste as (
    select device_id, waste_date, sum(quantity) as units, sum(waste_cost) as cost
    from {{ ref('fct_waste') }}
    where reason_code = 'TEMP_EXCURSION'
    group by 1, 2
),

daily as (
    select
        device_id,
        cast(reading_hour as date) as date_day,
        sum(minutes_monitored) as minutes_monitored,
        sum(minutes_above_safe) as minutes_above_safe,
        sum(minutes_below_safe) as minutes_below_safe,
        sum(case when minutes_above_safe > 0 then 1 else 0 end) as hours_with_excursion,
        max(max_temp_c) as max_temp_c,
        sum(sensor_errors) as sensor_errors
    from hourly
    group by 1, 2
),

final as (
    select
        daily.device_id,
        devices.store_id,
        devices.device_type,
        daily.date_day,
        cast(daily.minutes_monitored as integer) as minutes_monitored,
        cast(daily.minutes_above_safe as integer) as minutes_above_safe,
        cast(daily.minutes_below_safe as integer) as minutes_below_safe,
        cast(daily.hours_with_excursion as integer) as hours_with_excursion,
        cast(daily.max_temp_c as double) as max_temp_c,
        cast(daily.sensor_errors as integer) as sensor_errors,
        cast(
            1 - cast(daily.minutes_above_safe + daily.minutes_below_safe as double) / nullif(daily.minutes_monitored, 0)
            as double
        ) as pct_time_compliant,
        daily.minutes_above_safe = 0 and daily.minutes_below_safe = 0 as is_compliant,
        cast(coalesce(waste.units, 0) as bigint) as temperature_waste_units,
        cast(coalesce(waste.cost, 0) as decimal(14, 2)) as temperature_waste_cost
    from daily
    inner join devices on daily.device_id = devices.device_id
    left join waste
        on daily.device_id = waste.device_id
        and waste.waste_date = {{ dbt.dateadd('day', 1, 'daily.date_day') }}
)

select * from final
