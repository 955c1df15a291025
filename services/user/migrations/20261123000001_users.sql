-- Accounts. Emails are unique case-insensitively and stored as given (trimmed).
create table users (
    id            uuid        primary key,
    email         text        not null,
    password_hash text        not null,
    name          text        not null,
    role          text        not null check (role in ('customer', 'admin')),
    created_at    timestamptz not null default now(),
    updated_at    timestamptz not null default now()
);

create unique index users_email_key on users (lower(email));
