{#-
  Deduplication: of the rows sharing `partition_by` (an order sent twice by its till, a reading
  uploaded again), keep the one that sorts first by `order_by` (e.g. 'ingested_at desc nulls last':
  the latest received). Use it as a CTE body: `latest as ({{ latest_copy('orders', ['order_id'],
  'ingested_at desc nulls last') }})`. The result has every column of `relation` plus
  `copies_received` (how many rows shared the key) and `copy_rank` (always 1). Portable SQL, the
  same on DuckDB and Trino (Trino has no QUALIFY).
-#}
{% macro latest_copy(relation, partition_by, order_by) -%}
    {%- set copies = 'partition by ' ~ (partition_by | join(', ')) -%}
    select * from (
        select
            copy_source.*,
            row_number() over ({{ copies }} order by {{ order_by }}) as copy_rank,
            count(*) over ({{ copies }}) as copies_received
        from {{ relation }} as copy_source
    ) as ranked_copies
    where copy_rank = 1
{%- endmacro %}
