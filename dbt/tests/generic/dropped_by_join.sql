{#-
  Rows an inner join drops, counted: the rows of `model` whose `column_name` (a column or an
  expression) has no match in `field` of `to` (a NULL key never matches). The count is the test's
  result: it warns when any row is dropped and fails when more than `max_dropped_pct` percent of
  the rows are ("configured to fail if >max(allowed_dropped_rows)"), so dirt the model expects
  shows in every build and a broken source stops it.
-#}
{% test dropped_by_join(model, column_name, to, field, max_dropped_pct) %}
{{ config(fail_calc='max(dropped_rows)', warn_if='>0', error_if='>max(allowed_dropped_rows)') }}
with

joined_rows as (
    select {{ column_name }} as join_key from {{ model }}
),

join_targets as (
    select distinct {{ field }} as join_key from {{ to }}
),

counted as (
    select
        count(*) as total_rows,
        sum(case when join_targets.join_key is null then 1 else 0 end) as dropped_rows
    from joined_rows
    left join join_targets on joined_rows.join_key = join_targets.join_key
),

final as (
    select
        total_rows,
        coalesce(dropped_rows, 0) as dropped_rows,
        cast(floor(total_rows * {{ max_dropped_pct }} / 100.0) as bigint) as allowed_dropped_rows
    from counted
)

select * from final
{% endtest %}
