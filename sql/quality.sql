-- Data quality and evaluation reads for the asset checks.

-- name: row_estimate
SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = to_regclass(%s);

-- name: id_bounds
SELECT min(chunk_id) AS low, max(chunk_id) AS high FROM {table};

-- name: chunk_sample
-- Chunks at random ids drawn uniformly between the lowest and the highest, so every live chunk is
-- equally likely; each draw is one primary-key probe (a BERNOULLI sample reads every page of the
-- table). %(draws)s covers the gaps deleted chunks leave.
WITH ids AS (
    SELECT DISTINCT %(low)s::bigint + floor(random() * (%(high)s::bigint - %(low)s::bigint + 1))::bigint AS chunk_id
    FROM generate_series(1, %(draws)s)
)
SELECT c.chunk_id, c.connector_instance_id, c.stream, c.record_key, c.field, c.chunk_no, c.content,
       c.content_sha256, c.semantic_key
FROM ids JOIN semindex.chunks AS c USING (chunk_id)
LIMIT %(limit)s;

-- name: vector_sample
-- The same draw over a version's vector table.
WITH ids AS (
    SELECT DISTINCT %(low)s::bigint + floor(random() * (%(high)s::bigint - %(low)s::bigint + 1))::bigint AS chunk_id
    FROM generate_series(1, %(draws)s)
)
SELECT v.chunk_id, v.embedding FROM ids JOIN {vectors} AS v USING (chunk_id)
LIMIT %(limit)s;

-- name: chunk_writer_lock
SELECT pg_advisory_xact_lock(hashtext('semindex.chunk_writer'));

-- name: parity_cut
-- Where a parity check starts: the highest chunk id and the snapshot's xmin, read under the chunk
-- writer's lock (chunk_writer_lock first), so every chunk writer before has committed and every one
-- after takes higher ids.
SELECT coalesce(max(chunk_id), 0) AS chunk_watermark, pg_snapshot_xmin(pg_current_snapshot())::text AS horizon
FROM semindex.chunks;

-- name: parity_state
SELECT chunk_watermark, horizon::text AS horizon, full_verified_at, now() - full_verified_at AS full_age
FROM semindex.parity_verified WHERE version_id = %s;

-- name: parity_full
-- Every live chunk has exactly one vector: none missing, none orphaned (the primary key on chunk_id
-- already rules out two). Reads both tables whole.
SELECT
    (SELECT count(*) FROM semindex.chunks AS c
     WHERE NOT EXISTS (SELECT 1 FROM {vectors} AS v WHERE v.chunk_id = c.chunk_id)) AS missing,
    (SELECT count(*) FROM {vectors} AS v
     WHERE NOT EXISTS (SELECT 1 FROM semindex.chunks AS c WHERE c.chunk_id = v.chunk_id)) AS orphaned,
    NULL::bigint AS checked,
    false AS truncated;

-- name: parity_changed
-- The same, over only the chunk ids that can have changed since the last passing check: ids above
-- its watermark (every chunk and vector written since, in a normal run) and every id logged since
-- its horizon (deleted, moved, or inserted at or below a verified watermark). Each is two
-- primary-key probes. A logged TRUNCATE (NULL id) sends the caller to the full check.
WITH touched AS (
    SELECT chunk_id FROM semindex.chunk_id_changes WHERE xid >= %(horizon)s::xid8 AND chunk_id IS NOT NULL
    UNION
    SELECT chunk_id FROM semindex.chunks WHERE chunk_id > %(watermark)s
    UNION
    SELECT chunk_id FROM {vectors} WHERE chunk_id > %(watermark)s
), state AS (
    SELECT EXISTS (SELECT 1 FROM semindex.chunks AS c WHERE c.chunk_id = t.chunk_id) AS has_chunk,
           EXISTS (SELECT 1 FROM {vectors} AS v WHERE v.chunk_id = t.chunk_id) AS has_vector
    FROM touched AS t
)
SELECT count(*) FILTER (WHERE has_chunk AND NOT has_vector) AS missing,
       count(*) FILTER (WHERE has_vector AND NOT has_chunk) AS orphaned,
       count(*) AS checked,
       EXISTS (SELECT 1 FROM semindex.chunk_id_changes WHERE xid >= %(horizon)s::xid8 AND chunk_id IS NULL) AS truncated
FROM state;

-- name: record_parity
INSERT INTO semindex.parity_verified AS p (version_id, chunk_watermark, horizon, verified_at, full_verified_at)
-- A first state comes from a full check (there is nothing to bound the first one by).
VALUES (%(version_id)s, %(watermark)s, %(horizon)s::xid8, now(), now())
ON CONFLICT (version_id) DO UPDATE
SET chunk_watermark = excluded.chunk_watermark, horizon = excluded.horizon, verified_at = now(),
    full_verified_at = CASE WHEN %(full)s THEN now() ELSE p.full_verified_at END;

-- name: prune_chunk_id_changes
-- Changes every version with a verified state has checked (versions without one check in full).
DELETE FROM semindex.chunk_id_changes
WHERE xid < (SELECT min(p.horizon) FROM semindex.parity_verified AS p
             JOIN semindex.embedding_versions AS v USING (version_id) WHERE v.state <> 'retired');

-- name: query_sample
SELECT embedding FROM {vectors} TABLESAMPLE BERNOULLI (%s) LIMIT %s;

-- name: exact_scan
-- Exact top-k for the recall reference: index scans off, so the planner must scan and sort.
SELECT set_config('enable_indexscan', 'off', true), set_config('enable_bitmapscan', 'off', true);

-- name: set_ef_search
SELECT set_config('hnsw.ef_search', %s, true);

-- name: ann_top_k
-- The graph's recall: it holds one row per distinct text (represents_text), so both sides rank texts.
SELECT chunk_id, embedding {operator} %s AS distance FROM {vectors} WHERE represents_text
ORDER BY embedding {operator} %s LIMIT %s;

-- name: index_identity
-- An index's oid and file: a rebuild (REINDEX, a drop and create) changes one of them.
SELECT to_regclass(%s)::oid::text || ':' || pg_relation_filenode(to_regclass(%s))::text;

-- name: stored_measurement
SELECT state, verdict, measured_at FROM semindex.check_measurements
WHERE version_id = %(version_id)s AND check_name = %(check)s AND measured_at > now() - %(max_age)s::interval;

-- name: store_measurement
INSERT INTO semindex.check_measurements AS m (version_id, check_name, state, verdict)
VALUES (%(version_id)s, %(check)s, %(state)s::text, %(verdict)s)
ON CONFLICT (version_id, check_name)
DO UPDATE SET state = excluded.state, verdict = excluded.verdict, measured_at = now();
