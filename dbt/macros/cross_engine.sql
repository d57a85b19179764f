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
