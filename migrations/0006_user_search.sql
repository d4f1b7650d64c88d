-- /api/users?q=: a case-insensitive prefix of the username, email or name. Each has a
-- pattern index on its lower-cased value, so `lower(x) LIKE 'prefix%'` is an index range
-- scan (the three combine as a bitmap OR) instead of a scan of every user.
CREATE INDEX users_username_prefix_idx ON users (lower(username) text_pattern_ops);
CREATE INDEX users_email_prefix_idx ON users (lower(email) text_pattern_ops);
CREATE INDEX users_name_prefix_idx ON users (lower(name) text_pattern_ops);
