-- Read models fed from the global event feed. Each projection's checkpoint is written in
-- the same transaction as its read-model change, so a crash neither loses nor repeats
-- an event (cqrs-es's own queries run after the commit and can lose updates).
CREATE TABLE projection_checkpoints
(
    name       text PRIMARY KEY,
    position   bigint      NOT NULL DEFAULT 0 CHECK (position >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The CONTRACT's user. `position` is the global position of the last event applied.
CREATE TABLE users
(
    pk            bigint PRIMARY KEY,
    uuid          uuid        NOT NULL,
    username      text        NOT NULL,
    email         text        NOT NULL,
    name          text        NOT NULL,
    is_active     boolean     NOT NULL,
    type          text        NOT NULL,
    groups        text[]      NOT NULL,
    registered_at timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    deleted_at    timestamptz,
    position      bigint      NOT NULL
);

INSERT INTO projection_checkpoints (name) VALUES ('users');
