-- The customer master's change log, one row per bronze row: codes trimmed and upper-cased.
-- Personal data arrives normalised and encrypted per customer (the bronze contract's pii) and
-- passes through untouched, with the platform's tokens and address fingerprint beside it.
with

source as (
    select * from {{ source('bronze', 'customers') }}
),

final as (
    select
        upper(trim(customer_id)) as customer_id,
        full_name,
        email,
        phone,
        birth_date,
        street,
        city,
        postal_code,
        email_token,
        phone_token,
        address_fingerprint,
        upper(trim(home_store_id)) as home_store_id,
        updated_at
    from source
)

select * from final
