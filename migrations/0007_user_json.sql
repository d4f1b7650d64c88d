-- Timestamps as idsync's JSON writes them everywhere (chrono's RFC 3339 in UTC, `Z`,
-- with no fraction, milliseconds or microseconds, whichever is shortest and exact), so
-- JSON that Postgres builds for the API (pages of users) holds the same values as the JSON
-- idsync builds itself (one user, the feeds).
CREATE FUNCTION idsync_rfc3339(t timestamptz) RETURNS text
    LANGUAGE sql STABLE STRICT PARALLEL SAFE
AS $$
    SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
        || CASE
               WHEN extract(microseconds FROM t)::bigint % 1000000 = 0 THEN ''
               WHEN extract(microseconds FROM t)::bigint % 1000 = 0
                   THEN to_char(t AT TIME ZONE 'UTC', '.MS')
               ELSE to_char(t AT TIME ZONE 'UTC', '.US')
           END
        || 'Z'
$$;
