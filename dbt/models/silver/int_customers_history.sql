-- SCD2 history of customers, tracking the address and the home store. Personal data arrives
-- encrypted per customer and passes through untouched. Ciphertexts differ on every write (random
-- nonces), so moves are found on address_fingerprint (a keyed hash per customer of the normalised
-- street, city and postal code), never on the ciphertexts.
with

customers as (
    select * from {{ ref('stg_customers') }}
),

versions as (
    {{ scd2('customers', 'customer_id', 'updated_at', ['address_fingerprint', 'home_store_id'],
        'address_fingerprint, email_token') }}
),

final as (
    select
        {{ hash_key(['customer_id', 'valid_from']) }} as customer_sk,
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
        valid_from,
        valid_to,
        is_current
    from versions
)

select * from final
