-- Search: the per-source planner's inputs, and the lexical and semantic paths.
-- Every query carries the scope as bind parameters; an empty array means "no restriction" only
-- for fields and record keys, never for the source itself.

-- name: sources_in_scope
-- Every source the scope can see, with its vector count for the version (NULL = unknown, or no
-- version: lexical search) and its hot partial index when it has one. Writers insert a (dirty) projection row in the same
-- transaction as the records, so every source with data is listed.
SELECT p.connector_instance_id, p.stream,
       -- The last computed count, even when the source has been written since: a stale estimate
       -- only costs speed (a short ANN answer falls back to exact); NULL = never counted.
       CASE WHEN p.computed_at IS NULL THEN NULL ELSE (p.embedded_counts ->> %(version_key)s::text)::bigint END AS vector_estimate,
       h.index_name AS partial_index,
       -- the version's total, for each source's share of it (one round trip instead of two)
       (SELECT coalesce(sum((t.embedded_counts ->> %(version_key)s::text)::bigint), 0)
        FROM semindex.retained_size_projection AS t) AS version_total
FROM semindex.retained_size_projection AS p
LEFT JOIN semindex.partial_hnsw_indexes AS h
       ON h.version_id = %(version_id)s AND h.connector_instance_id = p.connector_instance_id AND h.stream = p.stream
WHERE (cardinality(%(instances)s::text[]) = 0 OR p.connector_instance_id = ANY(%(instances)s::text[]))
  AND (cardinality(%(streams)s::text[]) = 0 OR p.stream = ANY(%(streams)s::text[]))
ORDER BY p.connector_instance_id, p.stream;

-- name: ann_settings
-- Local to the transaction. Custom plans only: a generic plan cannot prove a hot source's
-- partial-index predicate from bind parameters, and would silently walk the version's whole graph.
SELECT set_config('hnsw.ef_search', %s, true),
       set_config('hnsw.max_scan_tuples', %s, true),
       set_config('plan_cache_mode', 'force_custom_plan', true);

-- name: iterative_scan
-- pgvector 0.8: a filtered walk keeps going until enough rows pass the filter.
SELECT set_config('hnsw.iterative_scan', 'strict_order', true);

-- Every nearest-neighbour statement yields (key, record_key, field, distance) rows, key being the
-- chunk id; {operator} is the version's distance operator.

-- name: semantic_exact
-- The scoped rows are materialized first, so no index can order them: an HNSW scan with an
-- incremental sort on top (which PostgreSQL does pick for this ORDER BY) would under-return under a
-- filter. Exact distance order, ties broken by record key.
WITH scoped AS MATERIALIZED (
    SELECT chunk_id, record_key, field, embedding {operator} %(query)s AS distance
    FROM {vectors}
    WHERE connector_instance_id = %(instance)s AND stream = %(stream)s
      AND (cardinality(%(fields)s::text[]) = 0 OR field = ANY(%(fields)s::text[]))
      AND (cardinality(%(record_keys)s::text[]) = 0 OR record_key = ANY(%(record_keys)s::text[]))
)
SELECT chunk_id AS key, record_key, field, distance
FROM scoped
ORDER BY distance, record_key, chunk_id
LIMIT %(limit)s;

-- name: semantic_exact_all
-- Exact over the whole version (a short unscoped walk answered again): materialized like the above.
WITH scoped AS MATERIALIZED (
    SELECT chunk_id, record_key, field, embedding {operator} %(query)s AS distance
    FROM {vectors}
    WHERE (cardinality(%(fields)s::text[]) = 0 OR field = ANY(%(fields)s::text[]))
      AND (cardinality(%(record_keys)s::text[]) = 0 OR record_key = ANY(%(record_keys)s::text[]))
)
SELECT chunk_id AS key, record_key, field, distance
FROM scoped
ORDER BY distance, record_key, chunk_id
LIMIT %(limit)s;

-- name: semantic_ann
-- One sort key so the planner can walk the version's HNSW graph, or the source's partial graph
-- whose predicate these equalities imply; the scope is applied in the database.
SELECT chunk_id AS key, record_key, field, embedding {operator} %(query)s AS distance
FROM {vectors}
WHERE connector_instance_id = %(instance)s AND stream = %(stream)s
  AND (cardinality(%(fields)s::text[]) = 0 OR field = ANY(%(fields)s::text[]))
ORDER BY embedding {operator} %(query)s
LIMIT %(limit)s;

-- name: semantic_ann_group
-- Every source planned "ann" in one walk of the version's graph: one walk at their combined
-- selectivity fills the page sooner than one walk per source. The instance and stream lists come
-- from in-scope sources, so every combination of them is in scope too.
SELECT chunk_id AS key, record_key, field, embedding {operator} %(query)s AS distance
FROM {vectors}
WHERE connector_instance_id = ANY(%(instances)s::text[]) AND stream = ANY(%(streams)s::text[])
  AND (cardinality(%(fields)s::text[]) = 0 OR field = ANY(%(fields)s::text[]))
ORDER BY embedding {operator} %(query)s
LIMIT %(limit)s;

-- name: semantic_global_ann
-- No scope at all: one walk of the version's graph instead of one per source.
SELECT chunk_id AS key, record_key, field, embedding {operator} %(query)s AS distance
FROM {vectors}
ORDER BY embedding {operator} %(query)s
LIMIT %(limit)s;

-- name: scan_source
-- The scan engine's input: one source's scoped rows with the embedding as text, streamed through a
-- server-side cursor and ranked in numpy. No ORDER BY or LIMIT: every row is ranked before any cut.
SELECT chunk_id AS key, record_key, field, embedding::text AS embedding
FROM {vectors}
WHERE connector_instance_id = %(instance)s AND stream = %(stream)s
  AND (cardinality(%(fields)s::text[]) = 0 OR field = ANY(%(fields)s::text[]))
  AND (cardinality(%(record_keys)s::text[]) = 0 OR record_key = ANY(%(record_keys)s::text[]));

-- name: scan_all
-- The scan engine over the whole version.
SELECT chunk_id AS key, record_key, field, embedding::text AS embedding
FROM {vectors}
WHERE (cardinality(%(fields)s::text[]) = 0 OR field = ANY(%(fields)s::text[]))
  AND (cardinality(%(record_keys)s::text[]) = 0 OR record_key = ANY(%(record_keys)s::text[]));

-- name: chunk_details
SELECT chunk_id, connector_id, connector_instance_id, stream, record_key, field, chunk_no, content
FROM semindex.chunks WHERE chunk_id = ANY(%s);

-- name: lexical_settings
-- Parallel workers need /dev/shm and died on broad terms in small containers (SQLSTATE 53100).
SELECT set_config('max_parallel_workers_per_gather', '0', true);

-- name: lexical_source_settings
-- Rows lie clustered by source, so a sequential scan "until the window is full" may read every
-- other source first. Without it the planner picks between the scope btree (a common term fills
-- the window within the source's first rows) and the scoped GIN (a rare term).
SELECT set_config('enable_seqscan', 'off', true);

-- name: lexical_source
-- A bounded candidate window from the scoped GIN match, then ranking over the window only
-- (snippets are cut later, for the final page alone).
-- %(window)s is NULL on the exact path (record keys given: the caller bounded the candidates).
WITH query AS (
    SELECT websearch_to_tsquery('simple', %(query)s) AS tsq
), candidates AS MATERIALIZED (
    -- The tsquery is written out here, not taken from the CTE above, so the planner sees how
    -- common the terms are: a very common term then reads the first matches in order and stops at
    -- the window, instead of building a bitmap of every match first.
    SELECT c.chunk_id
    FROM semindex.chunks AS c
    WHERE c.connector_instance_id = %(instance)s AND c.stream = %(stream)s AND c.document @@ websearch_to_tsquery('simple', %(query)s)
      AND (cardinality(%(fields)s::text[]) = 0 OR c.field = ANY(%(fields)s::text[]))
      AND (cardinality(%(record_keys)s::text[]) = 0 OR c.record_key = ANY(%(record_keys)s::text[]))
    LIMIT %(window)s
)
SELECT c.chunk_id, ts_rank_cd(c.document, query.tsq) AS rank, (SELECT count(*) FROM candidates) AS candidate_count
FROM candidates JOIN semindex.chunks AS c USING (chunk_id), query
ORDER BY rank DESC, c.record_key, c.chunk_id
LIMIT %(limit)s;

-- name: lexical_global
-- No source in the scope: one windowed match over the scoped GIN (a multicolumn GIN index serves a
-- condition on any subset of its columns), instead of one query per source.
WITH query AS (
    SELECT websearch_to_tsquery('simple', %(query)s) AS tsq
), candidates AS MATERIALIZED (
    -- The tsquery is written out here, not taken from the CTE above, so the planner sees how
    -- common the terms are: a very common term then reads the first matches in order and stops at
    -- the window, instead of building a bitmap of every match first.
    SELECT c.chunk_id
    FROM semindex.chunks AS c
    WHERE c.document @@ websearch_to_tsquery('simple', %(query)s)
      AND (cardinality(%(fields)s::text[]) = 0 OR c.field = ANY(%(fields)s::text[]))
      AND (cardinality(%(record_keys)s::text[]) = 0 OR c.record_key = ANY(%(record_keys)s::text[]))
    LIMIT %(window)s
)
SELECT c.chunk_id, ts_rank_cd(c.document, query.tsq) AS rank, (SELECT count(*) FROM candidates) AS candidate_count
FROM candidates JOIN semindex.chunks AS c USING (chunk_id), query
ORDER BY rank DESC, c.record_key, c.chunk_id
LIMIT %(limit)s;

-- name: lexical_snippets
-- ts_headline re-parses the text, so it runs for the page's hits only.
SELECT c.chunk_id, ts_headline('simple', c.content, websearch_to_tsquery('simple', %s),
                               'MaxFragments=1, MaxWords=35, MinWords=12')
FROM semindex.chunks AS c WHERE c.chunk_id = ANY(%s);
