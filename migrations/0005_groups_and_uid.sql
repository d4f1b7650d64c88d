-- Group events. Authentik reports a change of membership or a group's rename only as an
-- event of the group, so the inbox takes group items too: `group_pk` names the group,
-- and `user_pk` is 0 for them. Claiming serialises items per (user_pk, group_pk), so a
-- group's items run one at a time, in arrival order, like a user's.
ALTER TABLE webhook_inbox ADD COLUMN group_pk uuid;
ALTER TABLE webhook_inbox DROP CONSTRAINT webhook_inbox_user_pk_check;
ALTER TABLE webhook_inbox ADD CONSTRAINT webhook_inbox_subject_check
    CHECK ((group_pk IS NULL AND user_pk > 0) OR (group_pk IS NOT NULL AND user_pk = 0));

-- Every name each group was seen with (from a group's or a user's answer): after a
-- rename, the old names tell which users may still carry it. A name seen for a group is
-- kept until the group is deleted, so it does not matter which answer saw the new name
-- first. A cache of Authentik's state, not a read model: when it lacks a group, a
-- rename reaches its former holders at the next reconcile instead of at once.
CREATE TABLE authentik_group_names
(
    uuid    uuid        NOT NULL,
    name    text        NOT NULL,
    seen_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (uuid, name)
);

-- Authentik's hashed user id, what `sub` carries under the provider's default sub_mode.
ALTER TABLE users ADD COLUMN uid text;
CREATE INDEX users_uid_idx ON users (uid);
-- Finding the users that carry a group's name.
CREATE INDEX users_groups_idx ON users USING gin (groups);
