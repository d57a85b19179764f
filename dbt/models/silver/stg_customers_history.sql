-- SCD2 history of customers, tracking address and home store. Personal data arrives normalised
-- and encrypted per customer (bronze contract: pii); it passes through untouched, and the email
-- and phone tokens (keyed hashes of the normalised values) match the same person without it.
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
        trim(street) as street,
        trim(city) as city,
        trim(postal_code) as postal_code,
        upper(trim(home_store_id)) as home_store_id,
        updated_at
    from source
),

deduplicated as (
    select
        *,
        row_number() over (partition by customer_id, updated_at order by street) as copy_number
    from normalised
),

changes as (
    select
        *,
        lag(coalesce(street, '') || '|' || coalesce(city, '') || '|' || coalesce(postal_code, '') || '|'
            || coalesce(home_store_id, ''))
            over (partition by customer_id order by updated_at) as previous_tracked,
        coalesce(street, '') || '|' || coalesce(city, '') || '|' || coalesce(postal_code, '') || '|'
            || coalesce(home_store_id, '') as tracked
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
        home_store_id,
        updated_at as valid_from,
        lead(updated_at) over (partition by customer_id order by updated_at) as valid_to,
        lead(updated_at) over (partition by customer_id order by updated_at) is null as is_current
    from versions
)

select * from final
