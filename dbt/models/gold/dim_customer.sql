-- Customers as SCD2 (address and home store tracked). Personal data stays encrypted per customer;
-- policies/ decide who sees it decrypted, masked or not at all.
with

history as (
    select * from {{ ref('int_customers_history') }}
),

final as (
    select
        customer_sk,
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
        valid_from,
        valid_to,
        is_current
    from history
)

select * from final
