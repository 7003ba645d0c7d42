-- Data quality and evaluation reads for the asset checks.

-- name: row_estimate
SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = to_regclass(%s);

-- name: chunk_sample
SELECT chunk_id, connector_instance_id, stream, record_key, field, chunk_no, content, content_sha256, semantic_key
FROM semindex.chunks TABLESAMPLE BERNOULLI (%s) LIMIT %s;

-- name: vector_sample
SELECT chunk_id, embedding FROM {vectors} TABLESAMPLE BERNOULLI (%s) LIMIT %s;

-- name: parity
-- Once the backfill is done every live chunk has exactly one vector: none missing, none orphaned
-- (the primary key on chunk_id already rules out two).
SELECT
    (SELECT count(*) FROM semindex.chunks AS c
     WHERE NOT EXISTS (SELECT 1 FROM {vectors} AS v WHERE v.chunk_id = c.chunk_id)) AS missing,
    (SELECT count(*) FROM {vectors} AS v
     WHERE NOT EXISTS (SELECT 1 FROM semindex.chunks AS c WHERE c.chunk_id = v.chunk_id)) AS orphaned,
    (SELECT count(*) FROM semindex.chunks) AS chunks,
    (SELECT count(*) FROM {vectors}) AS vectors;

-- name: query_sample
SELECT embedding FROM {vectors} TABLESAMPLE BERNOULLI (%s) LIMIT %s;

-- name: exact_scan
-- Exact top-k for the recall reference: index scans off, so the planner must scan and sort.
SELECT set_config('enable_indexscan', 'off', true), set_config('enable_bitmapscan', 'off', true);

-- name: set_ef_search
SELECT set_config('hnsw.ef_search', %s, true);

-- name: ann_top_k
SELECT chunk_id, embedding {operator} %s AS distance FROM {vectors} ORDER BY embedding {operator} %s LIMIT %s;
