{#-
  `iceberg_table`: a model rebuilt in full and committed as one Iceberg snapshot.

  DuckDB: the model's rows go to a staging Parquet file, the lakehouse dbt plugin commits them to
  the catalog (an atomic overwrite), and the relation becomes a view over the committed snapshot.
  The plugin removes the staging file as soon as it has read it, whether the commit then succeeds
  or not (and DuckDB removes a file whose copy failed); `lakehouse dbt` stages each run in a
  private (0700) directory that it removes when dbt exits.
  Trino: the Iceberg connector writes the table itself, so dbt-trino's `table` materialization.
-#}
{% materialization iceberg_table, adapter='duckdb' %}
  {%- set target_relation = this.incorporate(type='view') -%}
  {%- set staging = adapter.external_root() ~ '/' ~ this.schema ~ '.' ~ this.identifier ~ '.parquet' -%}
  {%- set contract_config = config.get('contract') -%}

  {{ run_hooks(pre_hooks, inside_transaction=False) }}
  {{ run_hooks(pre_hooks, inside_transaction=True) }}

  {%- if contract_config.enforced -%}
    {{ get_assert_columns_equivalent(sql) }}
  {%- endif %}

  {% call statement('main') -%}
    copy ({{ sql }}) to '{{ staging }}' (format parquet, compression zstd)
  {%- endcall %}

  {%- set committed = {'unique_id': model.unique_id, 'invocation_id': invocation_id} -%}
  {% do adapter.store_relation('lakehouse', target_relation, [], staging, 'parquet', committed) %}

  {% call statement('bind') -%}
    create or replace view {{ target_relation }} as
      select * from iceberg_scan('{{ committed['metadata_location'] }}')
  {%- endcall %}

  {{ run_hooks(post_hooks, inside_transaction=True) }}
  {{ adapter.commit() }}
  {{ run_hooks(post_hooks, inside_transaction=False) }}

  {{ return({'relations': [target_relation]}) }}
{% endmaterialization %}

{% materialization iceberg_table, adapter='trino' %}
  {{ return(materialization_table_trino()) }}
{% endmaterialization %}
