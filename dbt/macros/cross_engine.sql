{#- Engine differences live here, dispatched per adapter; models never branch on the engine. -#}

{#- ISO day of week, Monday = 1 .. Sunday = 7. -#}
{% macro iso_day_of_week(expr) %}{{ return(adapter.dispatch('iso_day_of_week', 'lakehouse')(expr)) }}{% endmacro %}
{% macro default__iso_day_of_week(expr) %}isodow({{ expr }}){% endmacro %}
{% macro trino__iso_day_of_week(expr) %}day_of_week({{ expr }}){% endmacro %}

{#- Day of year, 1 .. 366. -#}
{% macro day_of_year(expr) %}{{ return(adapter.dispatch('day_of_year', 'lakehouse')(expr)) }}{% endmacro %}
{% macro default__day_of_year(expr) %}dayofyear({{ expr }}){% endmacro %}
{% macro trino__day_of_year(expr) %}day_of_year({{ expr }}){% endmacro %}

{#- A timestamp type without time zone at microsecond precision (Iceberg `timestamp`). -#}
{% macro timestamp_type() %}{{ return(adapter.dispatch('timestamp_type', 'lakehouse')()) }}{% endmacro %}
{% macro default__timestamp_type() %}timestamp{% endmacro %}
{% macro trino__timestamp_type() %}timestamp(6){% endmacro %}

{#- Deterministic text hash for surrogate keys (hex md5). -#}
{% macro hash_key(exprs) %}{{ return(adapter.dispatch('hash_key', 'lakehouse')(exprs)) }}{% endmacro %}
{% macro default__hash_key(exprs) -%}
  md5({% for e in exprs %}coalesce(cast({{ e }} as varchar), '~'){% if not loop.last %} || '|' || {% endif %}{% endfor %})
{%- endmacro %}
{% macro trino__hash_key(exprs) -%}
  lower(to_hex(md5(to_utf8({% for e in exprs %}coalesce(cast({{ e }} as varchar), '~'){% if not loop.last %} || '|' || {% endif %}{% endfor %}))))
{%- endmacro %}

{#- Keep only the digits of a string (phone numbers). -#}
{% macro digits_only(expr) %}{{ return(adapter.dispatch('digits_only', 'lakehouse')(expr)) }}{% endmacro %}
{% macro default__digits_only(expr) %}regexp_replace({{ expr }}, '[^0-9]', '', 'g'){% endmacro %}
{% macro trino__digits_only(expr) %}regexp_replace({{ expr }}, '[^0-9]', ''){% endmacro %}

{#- The median of a numeric expression, as an aggregate. Trino has no exact median (its
    approx_percentile is a t-digest: 15 for the median of 10 and 15): the middle one or two
    values of the sorted group, averaged. element_at past the end is NULL (an all-NULL group). -#}
{% macro median(expr) %}{{ return(adapter.dispatch('median', 'lakehouse')(expr)) }}{% endmacro %}
{% macro default__median(expr) %}median({{ expr }}){% endmacro %}
{% macro trino__median(expr) -%}
    ((element_at(array_sort(array_agg({{ expr }}) filter (where {{ expr }} is not null)), greatest((count({{ expr }}) + 1) / 2, 1))
      + element_at(array_sort(array_agg({{ expr }}) filter (where {{ expr }} is not null)), count({{ expr }}) / 2 + 1)) / 2e0)
{%- endmacro %}

{#- Every hour from `first_hour` to `last_hour` of `bounds` (a relation with one row whose two
    columns are timestamps on the hour), both included, as rows of one column, `spine_hour`.
    DuckDB generates the series directly; Trino's sequence() stops at 10,000 elements, so it
    crosses days (up to 27 years) with the 24 hours of a day. -#}
{% macro hour_spine(bounds) %}{{ return(adapter.dispatch('hour_spine', 'lakehouse')(bounds)) }}{% endmacro %}
{% macro default__hour_spine(bounds) -%}
    select unnest(generate_series(first_hour, last_hour, interval '1 hour')) as spine_hour
    from {{ bounds }}
{%- endmacro %}
{% macro trino__hour_spine(bounds) -%}
    select date_add('hour', spine_hours.hour_of_day, cast(spine_days.spine_day as timestamp(6))) as spine_hour
    from {{ bounds }}
    cross join unnest(sequence(cast(first_hour as date), cast(last_hour as date))) as spine_days (spine_day)
    cross join unnest(sequence(0, 23)) as spine_hours (hour_of_day)
    where date_add('hour', spine_hours.hour_of_day, cast(spine_days.spine_day as timestamp(6)))
        between first_hour and last_hour
{%- endmacro %}
