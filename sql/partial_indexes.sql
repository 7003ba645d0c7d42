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
