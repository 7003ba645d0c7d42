-- The hot-source partial HNSW index set, per embedding version.

-- name: band_members
-- Sources in the medium-large band: enough rows that the exact scan is slow, a small enough share
-- of the version that a partial graph is cheap to build, the largest first. Counts are the last
-- computed ones: a source that is merely dirty (written since) keeps its expensive index.
WITH version_total AS (
    SELECT coalesce(sum((embedded_counts ->> %(version_key)s)::bigint), 0) AS total
    FROM semindex.retained_size_projection
)
SELECT p.connector_instance_id, p.stream, (p.embedded_counts ->> %(version_key)s)::bigint AS rows
FROM semindex.retained_size_projection AS p, version_total
WHERE p.computed_at IS NOT NULL
  AND (p.embedded_counts ->> %(version_key)s)::bigint >= %(min_rows)s
  AND (p.embedded_counts ->> %(version_key)s)::bigint <= %(max_share)s * version_total.total
ORDER BY rows DESC, p.connector_instance_id, p.stream
LIMIT %(max_sources)s;

-- name: managed
SELECT connector_instance_id, stream, index_name, row_estimate
FROM semindex.partial_hnsw_indexes WHERE version_id = %s;

-- name: record_member
INSERT INTO semindex.partial_hnsw_indexes (version_id, connector_instance_id, stream, index_name, row_estimate)
VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (version_id, connector_instance_id, stream)
DO UPDATE SET row_estimate = EXCLUDED.row_estimate, index_name = EXCLUDED.index_name;

-- name: forget_member
DELETE FROM semindex.partial_hnsw_indexes WHERE index_name = %s;

-- The hot-field partial HNSW index set, per embedding version.

-- name: field_band_members
-- Fields in the band, from the planner's statistics of the version's table (its most common fields
-- and their shares; ANALYZE keeps them): enough rows that the exact scan of a scattered field is
-- slow, at most the band's share of the version (above it, a walk filtered by the field stays
-- accurate), the largest first. Before the table is analyzed no field qualifies.
-- The shares are sampled (30,000 rows at the default statistics target: a field of 0.5% is read
-- within about 8%), so a field with a graph keeps it until it is 20% past an edge of the band, and
-- outranks a newcomer 20% larger: one near an edge is not built and dropped as ANALYZE re-samples.
WITH version_total AS (
    SELECT coalesce(sum((embedded_counts ->> %(version_key)s)::bigint), 0) AS total
    FROM semindex.retained_size_projection
), candidates AS (
    SELECT f.field, round(f.share * version_total.total)::bigint AS rows, f.share,
           EXISTS (SELECT 1 FROM semindex.field_hnsw_indexes AS h
                   WHERE h.version_id = %(version_id)s AND h.field = f.field) AS managed
    FROM pg_stats AS s, version_total,
         unnest(s.most_common_vals::text::text[], s.most_common_freqs) AS f(field, share)
    WHERE s.schemaname = %(schema)s AND s.tablename = %(table)s AND s.attname = 'field'
)
SELECT field, rows
FROM candidates
WHERE CASE WHEN managed THEN rows >= 0.8 * %(min_rows)s AND share <= 1.2 * %(max_share)s
           ELSE rows >= %(min_rows)s AND share <= %(max_share)s END
ORDER BY rows * CASE WHEN managed THEN 1.2 ELSE 1 END DESC, field
LIMIT %(max_fields)s;

-- name: managed_fields
SELECT field, index_name, row_estimate
FROM semindex.field_hnsw_indexes WHERE version_id = %s;

-- name: record_field_member
INSERT INTO semindex.field_hnsw_indexes (version_id, field, index_name, row_estimate)
VALUES (%s, %s, %s, %s)
ON CONFLICT (version_id, field)
DO UPDATE SET row_estimate = EXCLUDED.row_estimate, index_name = EXCLUDED.index_name;

-- name: forget_field_member
DELETE FROM semindex.field_hnsw_indexes WHERE index_name = %s;
