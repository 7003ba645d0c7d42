-- Retained-size projection: per (connector_instance_id, stream) counts and bytes. Writers mark a
-- source dirty; only dirty sources are recomputed, so the cost follows the change, not the table.

-- name: lock_dirty
-- Row locks make a writer that marks a source dirty during the recompute wait, so its mark lands
-- after (not under) our dirty = false. Rows a writer holds right now are skipped: they stay dirty
-- for the next refresh, and the refresh never waits on (or deadlocks with) a writer.
SELECT connector_instance_id, stream FROM semindex.retained_size_projection
WHERE dirty ORDER BY connector_instance_id, stream FOR UPDATE SKIP LOCKED;

-- name: recompute_counts
WITH sources AS (
    SELECT * FROM unnest(%(instances)s::text[], %(streams)s::text[]) AS s(connector_instance_id, stream)
), records AS (
    SELECT r.connector_instance_id, r.stream,
           count(*) FILTER (WHERE NOT r.deleted) AS record_count,
           coalesce(sum(pg_column_size(r.fields)) FILTER (WHERE NOT r.deleted), 0) AS record_bytes
    FROM semindex.raw_records AS r JOIN sources USING (connector_instance_id, stream)
    GROUP BY 1, 2
), chunk_counts AS (
    SELECT c.connector_instance_id, c.stream, count(*) AS chunk_count,
           coalesce(sum(octet_length(c.content)), 0) AS chunk_bytes
    FROM semindex.chunks AS c JOIN sources USING (connector_instance_id, stream)
    GROUP BY 1, 2
)
UPDATE semindex.retained_size_projection AS p
SET record_count = coalesce(records.record_count, 0),
    chunk_count = coalesce(chunk_counts.chunk_count, 0),
    bytes = coalesce(records.record_bytes, 0) + coalesce(chunk_counts.chunk_bytes, 0),
    embedded_counts = '{{}}'::jsonb
FROM sources
LEFT JOIN records USING (connector_instance_id, stream)
LEFT JOIN chunk_counts USING (connector_instance_id, stream)
WHERE p.connector_instance_id = sources.connector_instance_id AND p.stream = sources.stream;

-- name: add_version_counts
-- Vector bytes: the vector(d) datum is 4 bytes a dimension plus an 8-byte header.
WITH sources AS (
    SELECT * FROM unnest(%(instances)s::text[], %(streams)s::text[]) AS s(connector_instance_id, stream)
), counts AS (
    SELECT v.connector_instance_id, v.stream, count(*) AS embedded
    FROM {vectors} AS v JOIN sources USING (connector_instance_id, stream)
    GROUP BY 1, 2
)
UPDATE semindex.retained_size_projection AS p
SET embedded_counts = p.embedded_counts || jsonb_build_object(%(version_key)s::text, counts.embedded),
    bytes = p.bytes + counts.embedded * (4 * %(dimensions)s + 8)
FROM counts
WHERE p.connector_instance_id = counts.connector_instance_id AND p.stream = counts.stream;

-- name: mark_clean
UPDATE semindex.retained_size_projection AS p
SET dirty = false, computed_at = now()
FROM unnest(%(instances)s::text[], %(streams)s::text[]) AS s(connector_instance_id, stream)
WHERE p.connector_instance_id = s.connector_instance_id AND p.stream = s.stream;

-- name: all
SELECT connector_instance_id, stream, record_count, chunk_count, embedded_counts, bytes, dirty, computed_at
FROM semindex.retained_size_projection ORDER BY connector_instance_id, stream;
