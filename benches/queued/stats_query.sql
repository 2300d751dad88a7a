-- The queue gauges' count on PostgreSQL, before and after it read the
-- partial indexes (benches/RESULTS.md, seventh round): 400,000 delivered,
-- 2,000 dead and 1,000 pending events with 1 KiB bodies, vacuumed, then
-- each query twice. The queries are copies of the `stats` statement of
-- src/store/postgres.rs, the old one and the current one.
--
--   cd /tmp && pg_virtualenv -o max_parallel_workers_per_gather=0 \
--       psql -q -X -f /path/to/benches/queued/stats_query.sql
--
-- Prints each query's time (psql's \timing).
CREATE SCHEMA h;
CREATE TABLE h.events (
    id uuid PRIMARY KEY, route text NOT NULL, event text NOT NULL,
    state text NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts integer NOT NULL DEFAULT 0, received_at bigint NOT NULL, next_attempt_at bigint,
    lease_until bigint, lease_token bigint, last_error text, updated_at bigint NOT NULL,
    body bytea NOT NULL, headers bytea NOT NULL);
CREATE INDEX events_received ON h.events (received_at, id);
CREATE INDEX events_settled ON h.events (route, state, updated_at) WHERE state <> 'pending';
CREATE INDEX events_due_order ON h.events (route, next_attempt_at, id) WHERE state = 'pending';
-- 400,000 delivered (a day of retention at ~5/s, or minutes at a burst), 2,000 dead, 1,000 pending; 1 KiB bodies
INSERT INTO h.events SELECT gen_random_uuid(), 'r' || (i % 2), 'popup.shown',
  CASE WHEN i <= 400000 THEN 'delivered' WHEN i <= 402000 THEN 'dead' ELSE 'pending' END,
  1, i, i, NULL, NULL, NULL, i, convert_to(repeat('x', 1024), 'UTF8'), convert_to(repeat('h', 300), 'UTF8')
FROM generate_series(1, 403000) i;
VACUUM ANALYZE h.events;
-- Prepared, as hookgate's statements are: planning is not timed.
PREPARE old_count AS
SELECT route, count(*) FILTER (WHERE state = 'pending'), count(*) FILTER (WHERE state = 'delivered'),
       count(*) FILTER (WHERE state = 'dead'), min(received_at) FILTER (WHERE state = 'pending')
FROM h.events GROUP BY route ORDER BY route;
PREPARE new_count AS
WITH counts AS (
    SELECT route, 'pending' AS state, count(*) AS n, min(received_at) AS oldest
    FROM h.events WHERE state = 'pending' GROUP BY route
    UNION ALL
    SELECT route, state, count(*), NULL FROM h.events WHERE state <> 'pending' GROUP BY route, state)
SELECT route, coalesce(sum(n) FILTER (WHERE state = 'pending'), 0)::bigint,
       coalesce(sum(n) FILTER (WHERE state = 'delivered'), 0)::bigint,
       coalesce(sum(n) FILTER (WHERE state = 'dead'), 0)::bigint, min(oldest)
FROM counts GROUP BY route ORDER BY route;
\timing on
EXECUTE old_count;
EXECUTE old_count;
EXECUTE new_count;
EXECUTE new_count;
