-- Finding the caller's user when the token's `sub` is not the pk (IDSYNC_OIDC_SUBJECT).
CREATE INDEX users_uuid_idx ON users (uuid);
CREATE INDEX users_username_idx ON users (username);
CREATE INDEX users_email_idx ON users (email);

-- Single-use tickets for clients that cannot send headers (a browser EventSource).
-- Kept in Postgres so a ticket issued by one process works on another. Only a hash of
-- the ticket is stored: reading this table does not yield usable tickets.
CREATE TABLE stream_tickets
(
    ticket_hash      bytea PRIMARY KEY,
    claims           jsonb       NOT NULL,
    user_pk          bigint,
    is_admin         boolean     NOT NULL,
    token_expires_at timestamptz NOT NULL,
    expires_at       timestamptz NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stream_tickets_expires_idx ON stream_tickets (expires_at);
