{#-
  Slowly changing dimension, type 2, from a change log (one row per `key` and `updated_at`,
  copies allowed). Copies sharing key and updated_at collapse first (the one sorting first by
  `copy_order` wins: `latest_copy`). Then a version opens at an entity's first row and at every
  row where one of the `tracked` columns differs from the row before it (NULLs compare as values);
  a row that changes no tracked column (sent again, or changing only untracked columns) opens
  none, and the version keeps the values of the row that opened it. A version is valid from its
  `updated_at` (valid_from) until the next version's (valid_to; NULL and is_current for the
  latest), so versions are contiguous and join a fact on `valid_from <= t < valid_to`.

  Use it as a CTE body: `versions as ({{ scd2('products', 'product_id', 'updated_at',
  ['unit_price', 'unit_cost'], 'unit_price') }})`. The result has every column of `relation`
  plus valid_from, valid_to, is_current (and the helpers copy_rank, copies_received,
  opens_version). Personal data needs no special case: compare fingerprints and tokens, never
  ciphertexts (a fresh nonce makes every ciphertext differ). Portable SQL.
-#}
{% macro scd2(relation, key, updated_at, tracked, copy_order) -%}
    {%- set history = 'partition by ' ~ key ~ ' order by ' ~ updated_at -%}
    select
        changes.*,
        changes.{{ updated_at }} as valid_from,
        lead(changes.{{ updated_at }}) over ({{ history }}) as valid_to,
        lead(changes.{{ updated_at }}) over ({{ history }}) is null as is_current
    from (
        select
            copies.*,
            row_number() over ({{ history }}) = 1
            {%- for column in tracked %}
                or lag({{ column }}) over ({{ history }}) is distinct from {{ column }}
            {%- endfor %} as opens_version
        from ({{ latest_copy(relation, [key, updated_at], copy_order) }}) as copies
    ) as changes
    where changes.opens_version
{%- endmacro %}
