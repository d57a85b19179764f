with

devices as (
    select * from {{ ref('stg_devices') }}
),

final as (
    select
        device_id,
        store_id,
        device_type,
        model,
        installed_date,
        safe_temp_min_c,
        safe_temp_max_c
    from devices
)

select * from final
