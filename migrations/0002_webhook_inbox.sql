-- The durable inbox: every accepted webhook is a row here before intake answers 202.
-- Sync workers claim rows, fetch the user from Authentik and append events.
CREATE TABLE webhook_inbox
(
    id              uuid PRIMARY KEY,
    -- arrival order; a pk's items are processed in this order
    seq             bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    received_at     timestamptz NOT NULL DEFAULT now(),
    -- Authentik's event id when the body carried one: a re-delivery is a duplicate
    event_id        text UNIQUE,
    action          text        NOT NULL CHECK (action IN ('model_created', 'model_updated', 'model_deleted')),
    user_pk         bigint      NOT NULL CHECK (user_pk > 0),
    format          text        NOT NULL,
    body            text        NOT NULL,
    status          text        NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'processing', 'done', 'ignored', 'failed')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    -- the lease of the worker processing it; past it, the item is reclaimed
    locked_until    timestamptz,
    locked_by       text,
    last_error      text,
    outcome         text,
    finished_at     timestamptz
);

-- What claiming scans: unfinished items, by due time and by pk in arrival order.
CREATE INDEX webhook_inbox_unfinished ON webhook_inbox (seq)
    WHERE status IN ('pending', 'processing');
CREATE INDEX webhook_inbox_unfinished_pk ON webhook_inbox (user_pk, seq)
    WHERE status IN ('pending', 'processing');
CREATE INDEX webhook_inbox_status ON webhook_inbox (status, seq);
