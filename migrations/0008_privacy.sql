-- Crypto-shredding (docs/privacy.md). Each user's personal fields in event payloads are
-- encrypted with that user's own data key; the key is kept here, wrapped (encrypted) by
-- the key-encryption key from IDSYNC_DATA_KEY, which never reaches the database.
-- Erasing a user deletes its row: every ciphertext made with it becomes unreadable,
-- in this database and in every backup of it.
CREATE TABLE user_data_keys
(
    user_pk     bigint PRIMARY KEY,
    -- nonce (12 bytes) || AES-256-GCM-SIV(data key, associated data "idsync:dk:<pk>")
    wrapped_key bytea       NOT NULL,
    -- Which key-encryption key wrapped it (an id derived from the key, never the key):
    -- `idsync rotate-data-key` rewraps the rows whose id is not the current key's.
    kek_id      text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX user_data_keys_kek_idx ON user_data_keys (kek_id);

-- The users read model keeps no personal data of an erased user: its personal columns
-- are emptied and this says why they are empty.
ALTER TABLE users ADD COLUMN erased boolean NOT NULL DEFAULT false;
