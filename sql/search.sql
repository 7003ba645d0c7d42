-- Search: the per-source planner's inputs, and the lexical and semantic paths.
-- Every query carries the scope as bind parameters; an empty array means "no restriction" only
-- for fields and record keys, never for the source itself. Record keys go in binary (%(record_keys)b):
-- 1,000 of them took a millisecond more per statement as a text array, dumped and parsed.

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

-- name: field_statistics
-- How the version's rows spread over fields, from the planner's statistics of its table (ANALYZE and
-- autovacuum keep them): the most common fields with their shares, and the number of distinct fields
-- (negative: a share of the rows). No row: the table has not been analyzed yet. With one field
-- wanted, its hot partial graph (semindex.partial_indexes) when it has one.
SELECT most_common_vals::text::text[] AS fields, most_common_freqs AS shares, n_distinct,
       (SELECT h.index_name FROM semindex.field_hnsw_indexes AS h
        WHERE h.version_id = %(version_id)s AND h.field = %(field)s::text) AS partial_index
FROM pg_stats
WHERE schemaname = %(schema)s AND tablename = %(table)s AND attname = 'field';

-- name: ann_settings
-- Local to the transaction. (The walks themselves are never prepared: semindex.search.pgvector_engine.)
SELECT set_config('hnsw.ef_search', %s, true),
       set_config('hnsw.max_scan_tuples', %s, true);

-- name: iterative_scan
-- pgvector 0.8: a filtered walk keeps going until enough rows pass the filter.
SELECT set_config('hnsw.iterative_scan', 'strict_order', true);

-- Every nearest-neighbour statement yields (key, record_key, field, distance, connector_instance_id,
-- stream) rows, key being the chunk id; {operator} is the version's distance operator. The
-- *_records statements give each record's nearest chunk only, so a page of k records is never short
-- while k records match.

-- name: semantic_exact
-- The scoped rows are materialized first, so no index can order them: an HNSW scan with an
-- incremental sort on top (which PostgreSQL does pick for this ORDER BY) would under-return under a
-- filter. Exact distance order, ties broken by record key.
WITH scoped AS MATERIALIZED (
    SELECT chunk_id, record_key, field, embedding {operator} %(query)s AS distance
    FROM {vectors}
    WHERE connector_instance_id = %(instance)s AND stream = %(stream)s
      AND (cardinality(%(fields)s::text[]) = 0 OR field = ANY(%(fields)s::text[]))
      AND semindex.field_granted(stream, field, %(rule_streams)s::text[], %(rule_pairs)s::text[])
      AND (%(since)s::timestamptz IS NULL AND %(until)s::timestamptz IS NULL AND cardinality(%(filter_fields)s::text[]) = 0
           OR semindex.record_admitted(connector_instance_id, stream, record_key, %(since)s, %(until)s,
                                       %(filter_fields)s::text[], %(filter_ops)s::text[], %(filter_values)s::text[]))
      AND (cardinality(%(record_keys)b::text[]) = 0 OR record_key = ANY(%(record_keys)b::text[]))
)
SELECT chunk_id AS key, record_key, field, distance, %(instance)s AS connector_instance_id, %(stream)s AS stream
FROM scoped
ORDER BY distance, record_key, chunk_id
LIMIT %(limit)s;

-- name: semantic_exact_records
WITH scoped AS MATERIALIZED (
    SELECT chunk_id, record_key, field, embedding {operator} %(query)s AS distance
    FROM {vectors}
    WHERE connector_instance_id = %(instance)s AND stream = %(stream)s
      AND (cardinality(%(fields)s::text[]) = 0 OR field = ANY(%(fields)s::text[]))
      AND semindex.field_granted(stream, field, %(rule_streams)s::text[], %(rule_pairs)s::text[])
      AND (%(since)s::timestamptz IS NULL AND %(until)s::timestamptz IS NULL AND cardinality(%(filter_fields)s::text[]) = 0
           OR semindex.record_admitted(connector_instance_id, stream, record_key, %(since)s, %(until)s,
                                       %(filter_fields)s::text[], %(filter_ops)s::text[], %(filter_values)s::text[]))
      AND (cardinality(%(record_keys)b::text[]) = 0 OR record_key = ANY(%(record_keys)b::text[]))
), nearest AS (
    SELECT DISTINCT ON (record_key) chunk_id, record_key, field, distance
    FROM scoped
    ORDER BY record_key, distance, chunk_id
)
SELECT chunk_id AS key, record_key, field, distance, %(instance)s AS connector_instance_id, %(stream)s AS stream
FROM nearest
ORDER BY distance, record_key, chunk_id
LIMIT %(limit)s;

-- name: semantic_exact_all
-- Exact over the whole version (a short unscoped walk answered again): materialized like the above.
WITH scoped AS MATERIALIZED (
    SELECT chunk_id, connector_instance_id, stream, record_key, field, embedding {operator} %(query)s AS distance
    FROM {vectors}
    WHERE (cardinality(%(fields)s::text[]) = 0 OR field = ANY(%(fields)s::text[]))
      AND semindex.field_granted(stream, field, %(rule_streams)s::text[], %(rule_pairs)s::text[])
      AND (%(since)s::timestamptz IS NULL AND %(until)s::timestamptz IS NULL AND cardinality(%(filter_fields)s::text[]) = 0
           OR semindex.record_admitted(connector_instance_id, stream, record_key, %(since)s, %(until)s,
                                       %(filter_fields)s::text[], %(filter_ops)s::text[], %(filter_values)s::text[]))
      AND (cardinality(%(record_keys)b::text[]) = 0 OR record_key = ANY(%(record_keys)b::text[]))
)
SELECT chunk_id AS key, record_key, field, distance, connector_instance_id, stream
FROM scoped
ORDER BY distance, record_key, chunk_id
LIMIT %(limit)s;

-- name: semantic_exact_all_records
WITH scoped AS MATERIALIZED (
    SELECT chunk_id, connector_instance_id, stream, record_key, field, embedding {operator} %(query)s AS distance
    FROM {vectors}
    WHERE (cardinality(%(fields)s::text[]) = 0 OR field = ANY(%(fields)s::text[]))
      AND semindex.field_granted(stream, field, %(rule_streams)s::text[], %(rule_pairs)s::text[])
      AND (%(since)s::timestamptz IS NULL AND %(until)s::timestamptz IS NULL AND cardinality(%(filter_fields)s::text[]) = 0
           OR semindex.record_admitted(connector_instance_id, stream, record_key, %(since)s, %(until)s,
                                       %(filter_fields)s::text[], %(filter_ops)s::text[], %(filter_values)s::text[]))
      AND (cardinality(%(record_keys)b::text[]) = 0 OR record_key = ANY(%(record_keys)b::text[]))
), nearest AS (
    SELECT DISTINCT ON (connector_instance_id, stream, record_key) chunk_id, connector_instance_id, stream, record_key, field, distance
    FROM scoped
    ORDER BY connector_instance_id, stream, record_key, distance, chunk_id
)
SELECT chunk_id AS key, record_key, field, distance, connector_instance_id, stream
FROM nearest
ORDER BY distance, record_key, chunk_id
LIMIT %(limit)s;

-- name: semantic_ann
-- One sort key so the planner can walk the version's HNSW graph, or the source's partial graph
-- whose predicate these equalities imply; the scope is applied in the database.
SELECT chunk_id AS key, record_key, field, embedding {operator} %(query)s AS distance, connector_instance_id, stream
FROM {vectors}
WHERE connector_instance_id = %(instance)s AND stream = %(stream)s
  AND (cardinality(%(fields)s::text[]) = 0 OR field = ANY(%(fields)s::text[]))
  AND semindex.field_granted(stream, field, %(rule_streams)s::text[], %(rule_pairs)s::text[])
  AND (%(since)s::timestamptz IS NULL AND %(until)s::timestamptz IS NULL AND cardinality(%(filter_fields)s::text[]) = 0
       OR semindex.record_admitted(connector_instance_id, stream, record_key, %(since)s, %(until)s,
                                   %(filter_fields)s::text[], %(filter_ops)s::text[], %(filter_values)s::text[]))
ORDER BY embedding {operator} %(query)s
LIMIT %(limit)s;

-- name: semantic_ann_field
-- A scope of one hot field (no sources, no record keys: those are planned exactly first): a walk of
-- the field's partial graph, whose predicate the field's equality implies; the rest of the scope is
-- applied in the database.
SELECT chunk_id AS key, record_key, field, embedding {operator} %(query)s AS distance, connector_instance_id, stream
FROM {vectors}
WHERE field = %(field)s
  AND semindex.field_granted(stream, field, %(rule_streams)s::text[], %(rule_pairs)s::text[])
  AND (%(since)s::timestamptz IS NULL AND %(until)s::timestamptz IS NULL AND cardinality(%(filter_fields)s::text[]) = 0
       OR semindex.record_admitted(connector_instance_id, stream, record_key, %(since)s, %(until)s,
                                   %(filter_fields)s::text[], %(filter_ops)s::text[], %(filter_values)s::text[]))
ORDER BY embedding {operator} %(query)s
LIMIT %(limit)s;

-- name: semantic_ann_group
-- Every source planned "ann" in one walk of the version's graph: one walk at their combined
-- selectivity fills the page sooner than one walk per source. The instance and stream lists come
-- from in-scope sources, so every combination of them is in scope too.
-- The graph holds one row per distinct text (represents_text, see sql/schema.sql): the walk ranks
-- texts, and each text's rows in scope are joined through the content index; an iterative scan goes
-- on walking until the limit's rows pass the scope. Rows of one text share its distance.
SELECT v.chunk_id AS key, v.record_key, v.field, v.embedding {operator} %(query)s AS distance,
       v.connector_instance_id, v.stream
FROM {vectors} AS t
JOIN LATERAL (
    SELECT v.chunk_id, v.record_key, v.field, v.embedding, v.connector_instance_id, v.stream
    FROM {vectors} AS v
    WHERE v.content_sha256 = t.content_sha256
      AND v.connector_instance_id = ANY(%(instances)s::text[]) AND v.stream = ANY(%(streams)s::text[])
      AND (cardinality(%(fields)s::text[]) = 0 OR v.field = ANY(%(fields)s::text[]))
      AND semindex.field_granted(v.stream, v.field, %(rule_streams)s::text[], %(rule_pairs)s::text[])
      AND (%(since)s::timestamptz IS NULL AND %(until)s::timestamptz IS NULL AND cardinality(%(filter_fields)s::text[]) = 0
           OR semindex.record_admitted(v.connector_instance_id, v.stream, v.record_key, %(since)s, %(until)s,
                                       %(filter_fields)s::text[], %(filter_ops)s::text[], %(filter_values)s::text[]))
    LIMIT %(limit)s
) AS v ON true
WHERE t.represents_text
ORDER BY t.embedding {operator} %(query)s
LIMIT %(limit)s;

-- name: semantic_global_ann
-- No scope at all: one walk of the version's graph of distinct texts, each expanded to its rows.
SELECT v.chunk_id AS key, v.record_key, v.field, v.embedding {operator} %(query)s AS distance,
       v.connector_instance_id, v.stream
FROM {vectors} AS t
JOIN LATERAL (
    SELECT v.chunk_id, v.record_key, v.field, v.embedding, v.connector_instance_id, v.stream
    FROM {vectors} AS v
    WHERE v.content_sha256 = t.content_sha256
    LIMIT %(limit)s
) AS v ON true
WHERE t.represents_text
ORDER BY t.embedding {operator} %(query)s
LIMIT %(limit)s;

-- name: scan_source
-- The scan engine's input: one source's scoped rows with the embedding as text, streamed through a
-- server-side cursor and ranked in numpy. No ORDER BY or LIMIT: every row is ranked before any cut.
SELECT chunk_id AS key, record_key, field, embedding::text AS embedding, connector_instance_id, stream
FROM {vectors}
WHERE connector_instance_id = %(instance)s AND stream = %(stream)s
  AND (cardinality(%(fields)s::text[]) = 0 OR field = ANY(%(fields)s::text[]))
  AND semindex.field_granted(stream, field, %(rule_streams)s::text[], %(rule_pairs)s::text[])
  AND (%(since)s::timestamptz IS NULL AND %(until)s::timestamptz IS NULL AND cardinality(%(filter_fields)s::text[]) = 0
       OR semindex.record_admitted(connector_instance_id, stream, record_key, %(since)s, %(until)s,
                                   %(filter_fields)s::text[], %(filter_ops)s::text[], %(filter_values)s::text[]))
  AND (cardinality(%(record_keys)b::text[]) = 0 OR record_key = ANY(%(record_keys)b::text[]));

-- name: scan_all
-- The scan engine over the whole version.
SELECT chunk_id AS key, record_key, field, embedding::text AS embedding, connector_instance_id, stream
FROM {vectors}
WHERE (cardinality(%(fields)s::text[]) = 0 OR field = ANY(%(fields)s::text[]))
  AND semindex.field_granted(stream, field, %(rule_streams)s::text[], %(rule_pairs)s::text[])
  AND (%(since)s::timestamptz IS NULL AND %(until)s::timestamptz IS NULL AND cardinality(%(filter_fields)s::text[]) = 0
       OR semindex.record_admitted(connector_instance_id, stream, record_key, %(since)s, %(until)s,
                                   %(filter_fields)s::text[], %(filter_ops)s::text[], %(filter_values)s::text[]))
  AND (cardinality(%(record_keys)b::text[]) = 0 OR record_key = ANY(%(record_keys)b::text[]));

-- name: chunk_details
SELECT c.chunk_id, c.connector_id, c.connector_instance_id, c.stream, c.record_key, c.field, c.chunk_no, c.content,
       r.updated_at
FROM semindex.chunks AS c JOIN semindex.raw_records AS r USING (record_id)
WHERE c.chunk_id = ANY(%s);

-- name: lexical_settings
-- One round trip, local to the ranking's transaction:
-- Parallel workers need /dev/shm and died on broad terms in small containers (SQLSTATE 53100).
-- Synchronized sequential scans start where another scan of the table is: a truncated ranking (the
-- first matches up to the cap) would take different records on identical calls.
-- %(bitmapscan)s 'off' (NULL keeps the server's setting) for a truncated ranking, whose rarest term
-- matches more documents than the window: the first matches, read in index order from the scope's
-- btree and stopped at the window, instead of a bitmap of every match; and for record keys fewer
-- than the matches, whose documents are read through the keys' btree and each tested.
-- %(seqscan)s 'off' (or NULL) for a scope of sources or fields, and for keys read through their btree:
-- rows lie clustered by source, so a sequential scan "until the window is full" may read every other
-- source first. Without it the planner picks between the scope btree (a common term fills the window
-- within the source's first rows) and the scoped GIN (a rare term). A scope of fields too: the field
-- btree, not a scan that read 304,123 other documents before the 200th quote at 1M rows.
SELECT set_config('max_parallel_workers_per_gather', '0', true),
       set_config('synchronize_seqscans', 'off', true),
       set_config('enable_bitmapscan', coalesce(%(bitmapscan)s::text, current_setting('enable_bitmapscan')), true),
       set_config('enable_seqscan', coalesce(%(seqscan)s::text, current_setting('enable_seqscan')), true);

-- name: lexical_statistics
-- BM25's statistics for a query: every positive part's lexemes (by PostgreSQL's own parser, as the
-- documents were cut) with their document counts in each source of the scope, and each source's
-- documents and tokens. A source with no documents is left out.
WITH parts AS (
    SELECT part, ordinality - 1 AS part_no FROM unnest(%(parts)s::text[]) WITH ORDINALITY AS p(part, ordinality)
), part_lexemes AS (
    SELECT DISTINCT p.part_no, u.lexeme FROM parts AS p, unnest(to_tsvector('simple', p.part)) AS u
)
SELECT s.connector_instance_id, s.stream, s.documents AS source_documents, s.tokens AS source_tokens,
       pl.part_no, pl.lexeme,
       -- One primary-key lookup per source and lexeme (a join could hash the whole table instead).
       coalesce((SELECT t.documents FROM semindex.lexical_terms AS t
                 WHERE t.connector_instance_id = s.connector_instance_id AND t.stream = s.stream
                   AND t.lexeme = pl.lexeme), 0) AS documents
FROM semindex.lexical_sources AS s
CROSS JOIN part_lexemes AS pl
WHERE s.documents > 0
  AND (cardinality(%(instances)s::text[]) = 0 OR s.connector_instance_id = ANY(%(instances)s::text[]))
  AND (cardinality(%(streams)s::text[]) = 0 OR s.stream = ANY(%(streams)s::text[]))
ORDER BY s.connector_instance_id, s.stream, pl.part_no, pl.lexeme;

-- name: lexical_queries
-- The parsed query's tsqueries, built once: the match (what a document must satisfy), the one
-- snippets highlight (exclusions left out), and each positive part's own (words, then phrases), from
-- which the caller ORs the parts a windowed source takes its candidates from. Passed back as text,
-- they are constants when each ranking statement is planned, so the planner sees how common they are.
SELECT semindex.search_tsquery(%(words)s, %(phrases)s, %(required)s, %(excluded)s)::text AS match,
       semindex.search_tsquery(%(words)s, %(phrases)s, %(required)s, '{{}}')::text AS highlight,
       ARRAY(SELECT plainto_tsquery('simple', w)::text FROM unnest(%(words)s::text[]) WITH ORDINALITY AS t(w, n) ORDER BY n)
       || ARRAY(SELECT phraseto_tsquery('simple', p)::text FROM unnest(%(phrases)s::text[] || %(required)s::text[])
                WITH ORDINALITY AS t(p, n) ORDER BY n) AS parts;

-- name: lexical_rank
-- BM25 (k1, b) over the matching lexical documents of one source (or, with %(instance)s and
-- %(stream)s NULL, of every source: one match over the scoped GIN, which serves a condition on any
-- subset of its columns), with the scope's statistics (the terms' idf and the average length)
-- computed by the caller. Never prepared (semindex.search.lexical), so a NULL source folds away. The
-- candidates are every match up to %(cap)s; %(window)s is the OR of the parts whose matches are the
-- candidates: every positive part, or for a windowed source its rarer parts (their postings are short).
-- Returns the best records, each scored by its best field.
WITH terms AS (
    SELECT lexeme, idf FROM unnest(%(lexemes)s::text[], %(idfs)s::float8[]) AS t(lexeme, idf)
), candidates AS MATERIALIZED (
    SELECT d.record_id, d.field, d.connector_instance_id, d.stream, d.record_key, d.document, d.token_count
    FROM semindex.lexical_documents AS d
    WHERE (%(instance)s::text IS NULL OR d.connector_instance_id = %(instance)s)
      AND (%(stream)s::text IS NULL OR d.stream = %(stream)s)
      AND d.document @@ %(window)s::tsquery
      -- Checked on the candidates, not through the index: only the window's terms are looked up.
      AND coalesce(d.document @@ %(match)s::tsquery, false)
      AND (cardinality(%(fields)s::text[]) = 0 OR d.field = ANY(%(fields)s::text[]))
      AND semindex.field_granted(d.stream, d.field, %(rule_streams)s::text[], %(rule_pairs)s::text[])
      AND (%(since)s::timestamptz IS NULL AND %(until)s::timestamptz IS NULL AND cardinality(%(filter_fields)s::text[]) = 0
           OR semindex.record_admitted(d.connector_instance_id, d.stream, d.record_key, %(since)s, %(until)s,
                                       %(filter_fields)s::text[], %(filter_ops)s::text[], %(filter_values)s::text[]))
      AND (cardinality(%(record_keys)b::text[]) = 0 OR d.record_key = ANY(%(record_keys)b::text[]))
    -- A scope of fields reads its first matches in the field btree's order (without fields this
    -- folds away). Unordered, the planner took the primary key (record_id, field) and tested the
    -- field on every entry until the field's records, loaded last, began: at 1M rows 12 ms before
    -- the first definition, against 1.2 ms through the field btree.
    ORDER BY CASE WHEN cardinality(%(fields)s::text[]) = 0 THEN NULL ELSE d.field END
    LIMIT %(cap)s
), scored AS (
    SELECT c.record_id, c.field, c.connector_instance_id, c.stream, c.record_key,
           sum(t.idf * u.tf * (%(k1)s + 1) / (u.tf + %(k1)s * (1 - %(b)s + %(b)s * c.token_count / %(average_length)s))) AS score
    FROM candidates AS c
    -- Only the query's lexemes are unnested: setweight marks them A (documents hold weight D only, as
    -- to_tsvector writes them) and ts_filter keeps the marked ones, both in C. Unnesting every lexeme of
    -- every candidate cost twice as much (1,000 candidates at 1M rows: 13.7 ms, against 6.3 ms).
    CROSS JOIN LATERAL (SELECT lexeme, cardinality(positions)::float8 AS tf
                        FROM unnest(ts_filter(setweight(c.document, 'A', %(lexemes)s::text[]), '{{a}}'))) AS u
    JOIN terms AS t USING (lexeme)
    GROUP BY c.record_id, c.field, c.connector_instance_id, c.stream, c.record_key
), records AS (
    -- A record scores its best field; its matched fields best first, ties by name.
    SELECT record_id, connector_instance_id, stream, record_key, max(score) AS score,
           array_agg(field ORDER BY score DESC, field COLLATE "C") AS fields,
           array_agg(score ORDER BY score DESC, field COLLATE "C") AS field_scores
    FROM scored
    GROUP BY record_id, connector_instance_id, stream, record_key
)
-- Only the best %(limit)s records come back, with how many documents and records matched: every
-- candidate's row cost more to fetch and sort in Python than to rank (375 rows: 2.4 ms). Ties in
-- byte order, as Python sorts the records of several sources.
SELECT r.record_id, r.connector_instance_id, r.stream, r.record_key, r.score, r.fields, r.field_scores,
       (SELECT count(*) FROM candidates) AS candidates, count(*) OVER () AS records
FROM records AS r
ORDER BY r.score DESC, r.connector_instance_id COLLATE "C", r.stream COLLATE "C", r.record_key COLLATE "C"
LIMIT %(limit)s;

-- name: lexical_page
-- The page's records, each with its best field's best chunk (most of the query's terms, then the
-- first): its place and its text, highlighted. ts_headline re-parses the text, so it runs for the
-- page's hits only.
WITH page AS (
    SELECT record_id, field FROM unnest(%(records)s::bigint[], %(fields)s::text[]) AS p(record_id, field)
), query AS (
    SELECT %(highlight)s::tsquery AS tsq
), best AS (
    SELECT DISTINCT ON (c.record_id) c.record_id, c.chunk_id, c.connector_id, c.connector_instance_id, c.stream,
           c.record_key, c.field, c.chunk_no, c.content, r.updated_at
    FROM semindex.chunks AS c
    JOIN semindex.raw_records AS r USING (record_id)
    JOIN page AS p ON p.record_id = c.record_id AND p.field = c.field
    CROSS JOIN query
    ORDER BY c.record_id, ts_rank_cd(c.document, query.tsq) DESC, c.chunk_no
)
SELECT b.record_id, b.chunk_id, b.connector_id, b.connector_instance_id, b.stream, b.record_key, b.field, b.chunk_no,
       b.updated_at, ts_headline('simple', b.content, query.tsq, 'MaxFragments=1, MaxWords=35, MinWords=12, StartSel=<mark>, StopSel=</mark>') AS snippet
FROM best AS b CROSS JOIN query;

-- name: lexical_chunks
-- Chunk-level lexical hits (passages): the matching chunks of the ranked records' matched fields,
-- best first within each record.
WITH records AS (
    SELECT record_id, record_rank FROM unnest(%(records)s::bigint[]) WITH ORDINALITY AS r(record_id, record_rank)
), query AS (
    SELECT %(match)s::tsquery AS tsq
)
SELECT c.record_id, c.chunk_id, c.connector_id, c.connector_instance_id, c.stream, c.record_key, c.field, c.chunk_no,
       raw.updated_at, ts_headline('simple', c.content, query.tsq, 'MaxFragments=1, MaxWords=35, MinWords=12, StartSel=<mark>, StopSel=</mark>') AS snippet
FROM semindex.chunks AS c
JOIN records AS r USING (record_id)
JOIN semindex.raw_records AS raw USING (record_id)
CROSS JOIN query
WHERE c.field = ANY(%(fields)s::text[]) AND c.document @@ query.tsq
ORDER BY r.record_rank, ts_rank_cd(c.document, query.tsq) DESC, c.chunk_no
LIMIT %(limit)s;

-- name: connection_exists
-- Whether any source of this connection (connector instance) holds data: an unknown one is a 404.
SELECT EXISTS (SELECT 1 FROM semindex.retained_size_projection WHERE connector_instance_id = %(instance)s);
