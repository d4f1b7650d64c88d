-- The event store: postgres-es 0.5's `events` table, unchanged in the columns it names
-- in its INSERT, plus two columns filled by the trigger below.
--
-- global_position: a gap-free, commit-ordered position over all aggregates. postgres-es
-- has none (it orders by per-aggregate sequence). A bigserial would not do: T1 takes 1,
-- T2 takes 2 and commits, a reader advances past 2, T1 commits and event 1 is never read.
-- Instead every insert increments one counter row. The row lock it takes is held until
-- the writing transaction ends, so event writers are serialised: positions are handed out
-- in commit order, a rollback gives its numbers back, and readers may use a plain
-- `global_position > $cursor`.
CREATE TABLE events
(
    aggregate_type  text                         NOT NULL,
    aggregate_id    text                         NOT NULL,
    sequence        bigint CHECK (sequence >= 0) NOT NULL,
    event_type      text                         NOT NULL,
    event_version   text                         NOT NULL,
    payload         json                         NOT NULL,
    metadata        json                         NOT NULL,
    global_position bigint                       NOT NULL,
    recorded_at     timestamptz                  NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

CREATE UNIQUE INDEX events_global_position ON events (global_position);

CREATE TABLE event_position_counter
(
    -- a single row: the boolean key with CHECK makes a second row impossible
    id       boolean PRIMARY KEY DEFAULT true CHECK (id),
    position bigint  NOT NULL
);
INSERT INTO event_position_counter (id, position) VALUES (true, 0);

CREATE FUNCTION events_assign_global_position() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    UPDATE event_position_counter
       SET position = position + 1
     WHERE id
    RETURNING position INTO NEW.global_position;
    -- Taken after the counter lock, so recorded_at follows position order.
    NEW.recorded_at := clock_timestamp();
    -- Delivered at commit, in commit order (= position order); carries only the position.
    PERFORM pg_notify('idsync_events', NEW.global_position::text);
    RETURN NEW;
END;
$$;

CREATE TRIGGER events_global_position
    BEFORE INSERT ON events
    FOR EACH ROW
EXECUTE FUNCTION events_assign_global_position();
