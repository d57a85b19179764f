-- One row per calendar day: every day between the first and the last with an order or a reading.
with

orders as (
    select * from {{ ref('int_orders') }}
),

readings as (
    select * from {{ ref('int_sensor_readings') }}
),

order_days as (
    select min(order_date) as first_day, max(order_date) as last_day from orders
),

reading_days as (
    select min(cast(reading_ts as date)) as first_day, max(cast(reading_ts as date)) as last_day from readings
),

bounds as (
    select
        least(order_days.first_day, reading_days.first_day) as first_day,
        greatest(order_days.last_day, reading_days.last_day) as last_day
    from order_days
    cross join reading_days
),

digits as (
    select d from (values (0), (1), (2), (3), (4), (5), (6), (7), (8), (9)) as t (d)
),

numbers as (
    select a.d + 10 * b.d + 100 * c.d + 1000 * e.d as n
    from digits as a
    cross join digits as b
    cross join digits as c
    cross join digits as e
),

days as (
    select cast({{ dbt.dateadd('day', 'numbers.n', 'bounds.first_day') }} as date) as date_day
    from numbers
    cross join bounds
    where numbers.n <= {{ dbt.datediff('bounds.first_day', 'bounds.last_day', 'day') }}
),

final as (
    select
        cast(year(date_day) * 10000 + month(date_day) * 100 + day(date_day) as integer) as date_key,
        date_day,
        cast(year(date_day) as integer) as year,
        cast(quarter(date_day) as integer) as quarter,
        cast(month(date_day) as integer) as month,
        cast(day(date_day) as integer) as day_of_month,
        cast({{ iso_day_of_week('date_day') }} as integer) as iso_day_of_week,
        cast({{ day_of_year('date_day') }} as integer) as day_of_year,
        {{ iso_day_of_week('date_day') }} >= 6 as is_weekend,
        cast({{ dbt.date_trunc('week', 'date_day') }} as date) as week_start
    from days
)

select * from final
