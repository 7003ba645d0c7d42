-- Semantic search over one embedding version.

-- name: ann_settings
-- hnsw.iterative_scan (pgvector 0.8) keeps scanning the graph until enough rows pass the filters.
SELECT set_config('hnsw.ef_search', %s, true), set_config('hnsw.iterative_scan', 'strict_order', true);

-- name: semantic_top_k
WITH nearest AS (
    SELECT chunk_id, embedding {operator} %(query)s AS distance
    FROM {vectors}
    ORDER BY embedding {operator} %(query)s
    LIMIT %(k)s
)
SELECT c.connector_id, c.connector_instance_id, c.stream, c.record_key, c.field, c.chunk_no,
       c.content, nearest.distance
FROM nearest JOIN semindex.chunks AS c USING (chunk_id)
ORDER BY nearest.distance, c.record_key, c.chunk_id;
