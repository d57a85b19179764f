{#- Layers are schemas: a model in models/silver lands in `silver`, never `<target>_silver`. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
  {{ (custom_schema_name or target.schema) | trim }}
{%- endmacro %}
