-- The small schema the client-tool compatibility capture runs against
-- (scripts/compat/capture loads it into a fresh database `app`).
-- Keep it small and stable: the fixtures under
-- crates/portcullis/tests/fixtures/compat/ are what the tools sent for it.

create table public.people (
    id    serial primary key,
    name  text,
    email text,
    ssn   text
);

create table public.orders (
    id        int primary key,
    person_id int references public.people (id),
    total     numeric
);

create view public.v_people as select id, name from public.people;

create function public.add1(int) returns int
    language sql immutable
    as 'select $1 + 1';

create schema sales;

-- An enum, so that psycopg's EnumInfo.fetch has something to look up.
create type sales.invoice_status as enum ('open', 'paid', 'void');

create table sales.invoices (
    id       int primary key,
    order_id int references public.orders (id),
    status   sales.invoice_status not null default 'open'
);

insert into public.people (name, email, ssn) values
    ('Ada Lovelace', 'ada@example.com', '111-22-3333'),
    ('Alan Turing', 'alan@example.com', '444-55-6666');
insert into public.orders (id, person_id, total) values (1, 1, 12.50), (2, 2, 99.99);
insert into sales.invoices (id, order_id, status) values (1, 1, 'paid');
