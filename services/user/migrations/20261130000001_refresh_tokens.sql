-- Refresh tokens, stored only as SHA-256 hashes. A login starts a family; each refresh marks
-- the token rotated and adds the next one to the family. A rotated token presented again
-- (stolen, or replayed) revokes the whole family. Deleting an account deletes its tokens.
create table refresh_tokens (
    id         uuid        primary key,
    family_id  uuid        not null,
    user_id    uuid        not null references users (id) on delete cascade,
    token_hash bytea       not null unique,
    expires_at timestamptz not null,
    rotated_at timestamptz,
    revoked_at timestamptz,
    created_at timestamptz not null default now()
);

create index refresh_tokens_family on refresh_tokens (family_id);
create index refresh_tokens_user on refresh_tokens (user_id);
