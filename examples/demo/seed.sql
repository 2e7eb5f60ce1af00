-- Sample data for the Portcullis demo. All personal data is synthetic:
-- names are made up, emails use example.com, card numbers are test numbers
-- with valid Luhn check digits, SSNs use the never-issued 9xx area.
CREATE TABLE customers (
    id         int PRIMARY KEY,
    full_name  text NOT NULL,
    email      text NOT NULL,
    phone      text NOT NULL,
    ssn        text NOT NULL,
    card       text NOT NULL,
    iban       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

INSERT INTO customers (id, full_name, email, phone, ssn, card, iban)
SELECT i,
       (ARRAY['Ada','Grace','Alan','Edsger','Barbara','Donald','Margaret','Ken'])[1 + i % 8] || ' ' ||
       (ARRAY['Lovelace','Hopper','Turing','Dijkstra','Liskov','Knuth','Hamilton','Thompson'])[1 + (i / 8) % 8],
       'customer' || i || '@example.com',
       '+1-555-01' || lpad((i % 100)::text, 2, '0'),
       '9' || lpad((i % 100)::text, 2, '0') || '-' || lpad((i % 90 + 10)::text, 2, '0') || '-' || lpad(i::text, 4, '0'),
       (ARRAY['4111111111111111','5555555555554444','378282246310005','6011111111111117'])[1 + i % 4],
       'GB82WEST12345698765432'
FROM generate_series(1, 200) AS i;

CREATE TABLE orders (
    id          serial PRIMARY KEY,
    customer_id int NOT NULL REFERENCES customers (id),
    amount      numeric(10, 2) NOT NULL,
    status      text NOT NULL
);
INSERT INTO orders (customer_id, amount, status)
SELECT 1 + (i % 200), round((random() * 500)::numeric, 2),
       (ARRAY['new','paid','shipped','refunded'])[1 + i % 4]
FROM generate_series(1, 1000) AS i;

CREATE TABLE api_keys (
    id     serial PRIMARY KEY,
    owner  text NOT NULL,
    secret text NOT NULL
);
INSERT INTO api_keys (owner, secret) VALUES
    ('billing', 'AKIAIOSFODNN7EXAMPLE'),
    ('search',  'AKIAI44QH8DHBEXAMPLE');
