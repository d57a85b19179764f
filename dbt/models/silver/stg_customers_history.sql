-- SCD2 history of customers, tracking address and home store. Personal data arrives normalised
-- and encrypted per customer (bronze contract: pii), the address included; it passes through
-- untouched. Ciphertexts differ on every write (random nonces), so changes are found on
-- address_fingerprint (a keyed hash per customer of the normalised street, city and postal
-- code) and the email and phone tokens match the same person, all without the plaintext.
-- A new version opens only when a tracked attribute changes; re-sent rows collapse.
with

source as (
    select * from {{ source('bronze', 'customers') }}
),

normalised as (
    select
        upper(trim(customer_id)) as customer_id,
        full_name,
        email,
        phone,
        birth_date,
        email_token,
        phone_token,
        street,
        city,
        postal_code,
        address_fingerprint,
        upper(trim(home_store_id)) as home_store_id,
        updated_at
    from source
),

deduplicated as (
    select
        *,
        row_number() over (
            partition by customer_id, updated_at order by address_fingerprint, email_token
        ) as copy_number
    from normalised
),

changes as (
    select
        *,
        lag(coalesce(address_fingerprint, '') || '|' || coalesce(home_store_id, ''))
            over (partition by customer_id order by updated_at) as previous_tracked,
        coalesce(address_fingerprint, '') || '|' || coalesce(home_store_id, '') as tracked
    from deduplicated
    where copy_number = 1
),

versions as (
    select * from changes
    where previous_tracked is null or previous_tracked <> tracked
),

final as (
    select
        {{ hash_key(['customer_id', 'updated_at']) }} as customer_sk,
        customer_id,
        full_name,
        email,
        phone,
        birth_date,
        email_token,
        phone_token,
        street,
        city,
        postal_code,
        address_fingerprint,
        home_store_id,
        updated_at as valid_from,
        lead(updated_at) over (partition by customer_id order by updated_at) as valid_to,
        lead(updated_at) over (partition by customer_id order by updated_at) is null as is_current
    from versions
)

select * from final
