-- Refrigeration units, one row per bronze row: codes trimmed and cased, safe range as sent.
with

source as (
    select * from {{ source('bronze', 'devices') }}
),

final as (
    select
        upper(trim(device_id)) as device_id,
        upper(trim(store_id)) as store_id,
        lower(trim(device_type)) as device_type,
        trim(model) as model,
        installed_date,
        safe_temp_min_c,
        safe_temp_max_c
    from source
)

select * from final
