-- Retained-size projection: per (connector_instance_id, stream) counts and bytes. Writers mark a
-- source dirty; only dirty sources are refreshed, from the per-source counts the writes keep
-- (semindex.row_counts), so the cost follows the number of dirty sources, not their rows.

-- name: lock_dirty
-- Row locks make a writer that marks a source dirty during the recompute wait, so its mark lands
-- after (not under) our dirty = false. Rows a writer holds right now are skipped: they stay dirty
-- for the next refresh, and the refresh never waits on (or deadlocks with) a writer.
SELECT connector_instance_id, stream FROM semindex.retained_size_projection
WHERE dirty ORDER BY connector_instance_id, stream FOR UPDATE SKIP LOCKED;

-- name: set_counts
-- The dirty sources' counts, read from the counts the writes keep (semindex.row_counts), and clean.
UPDATE semindex.retained_size_projection AS p
SET record_count = s.record_count, chunk_count = s.chunk_count, bytes = s.bytes,
    embedded_counts = s.embedded_counts::jsonb, dirty = false, computed_at = now()
FROM unnest(%(instances)s::text[], %(streams)s::text[], %(records)s::bigint[], %(chunks)s::bigint[],
            %(bytes)s::bigint[], %(embedded)s::text[])
     AS s(connector_instance_id, stream, record_count, chunk_count, bytes, embedded_counts)
WHERE p.connector_instance_id = s.connector_instance_id AND p.stream = s.stream;

-- name: all
SELECT connector_instance_id, stream, record_count, chunk_count, embedded_counts, bytes, dirty, computed_at
FROM semindex.retained_size_projection ORDER BY connector_instance_id, stream;
