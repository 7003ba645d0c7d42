-- The zvec ANN substrate (semindex.ann_substrate): change capture, generations, the builder's reads
-- and the zvec plan's exact re-ranking.

-- name: create_capture
-- Statement-level triggers with transition tables (one per event: a transition table belongs to
-- one event). Created in the same transaction as the table, or by the migration for older tables.
CREATE OR REPLACE TRIGGER {insert_trigger} AFTER INSERT ON {vectors}
    REFERENCING NEW TABLE AS changed_rows FOR EACH STATEMENT EXECUTE FUNCTION semindex.capture_vector_changes({version_id});
CREATE OR REPLACE TRIGGER {update_trigger} AFTER UPDATE ON {vectors}
    REFERENCING NEW TABLE AS changed_rows FOR EACH STATEMENT EXECUTE FUNCTION semindex.capture_vector_changes({version_id});
CREATE OR REPLACE TRIGGER {delete_trigger} AFTER DELETE ON {vectors}
    REFERENCING OLD TABLE AS changed_rows FOR EACH STATEMENT EXECUTE FUNCTION semindex.capture_vector_changes({version_id});

-- name: capture_triggers
SELECT count(*) FROM pg_trigger WHERE tgrelid = to_regclass(%(vectors)s) AND tgname = ANY(%(names)s::text[]);

-- name: published
SELECT generation, horizon::text AS horizon, documents, recall_passed, published_at
FROM semindex.ann_generations WHERE version_id = %(version_id)s AND state = 'published';

-- name: generations
SELECT generation, horizon::text AS horizon, state, documents, build_seconds, disk_bytes, recall, recall_passed, published_at
FROM semindex.ann_generations WHERE version_id = %(version_id)s ORDER BY generation;

-- name: snapshot_horizon
-- Every transaction below this id has committed or aborted: the build's horizon.
SELECT pg_snapshot_xmin(pg_current_snapshot())::text;

-- name: builder_lock
-- One builder per version at a time (session-level: held for the whole build).
SELECT pg_advisory_lock(hashtextextended('semindex.zvec:' || %(version_id)s, 0));

-- name: register_source
-- In its own short transaction (the builder's snapshot only reads): the integer id zvec filters on.
INSERT INTO semindex.ann_sources (connector_instance_id, stream) VALUES (%(instance)s, %(stream)s)
ON CONFLICT (connector_instance_id, stream) DO UPDATE SET stream = EXCLUDED.stream
RETURNING source_id;

-- name: register_field
INSERT INTO semindex.ann_fields (field) VALUES (%(field)s)
ON CONFLICT (field) DO UPDATE SET field = EXCLUDED.field
RETURNING field_id;

-- name: all_rows
-- A full build: every row.
SELECT v.chunk_id, v.connector_instance_id, v.stream, v.field, v.embedding
FROM {vectors} AS v
ORDER BY v.chunk_id;

-- name: changed_rows
-- An incremental build: every chunk touched since the published horizon, as this snapshot sees it
-- (no embedding: the row is gone, delete it).
SELECT c.chunk_id, v.connector_instance_id, v.stream, v.field, v.embedding
FROM (SELECT DISTINCT chunk_id FROM semindex.vector_changes WHERE version_id = %(version_id)s AND xid >= %(since)s::xid8) AS c
LEFT JOIN {vectors} AS v USING (chunk_id)
ORDER BY c.chunk_id;

-- name: row_count
SELECT count(*) FROM {vectors};

-- name: sample_rows
SELECT chunk_id, embedding FROM {vectors} ORDER BY chunk_id LIMIT %(limit)s OFFSET %(offset)s;

-- name: lock_version
SELECT horizon::text FROM semindex.ann_generations WHERE version_id = %(version_id)s AND state = 'published' FOR UPDATE;

-- name: retire_published
UPDATE semindex.ann_generations SET state = 'retired' WHERE version_id = %(version_id)s AND state = 'published';

-- name: publish
INSERT INTO semindex.ann_generations (version_id, generation, horizon, state, documents, build_seconds, disk_bytes)
VALUES (%(version_id)s, %(generation)s, %(horizon)s::xid8, 'published', %(documents)s, %(build_seconds)s, %(disk_bytes)s);

-- name: newest_generation
SELECT coalesce(max(generation), 0) FROM semindex.ann_generations WHERE version_id = %(version_id)s;

-- name: prune_changes
-- Readers still on the previous generation need its delta: keep the log back to its horizon.
DELETE FROM semindex.vector_changes WHERE version_id = %(version_id)s AND xid < %(keep_from)s::xid8;

-- name: retired
SELECT generation FROM semindex.ann_generations WHERE version_id = %(version_id)s AND state = 'retired';

-- name: forget_generation
DELETE FROM semindex.ann_generations WHERE version_id = %(version_id)s AND generation = %(generation)s AND state = 'retired';

-- name: forget_generations
DELETE FROM semindex.ann_generations WHERE version_id = %(version_id)s;

-- name: forget_changes
DELETE FROM semindex.vector_changes WHERE version_id = %(version_id)s;

-- name: pending_changes
SELECT count(*) FROM (SELECT 1 FROM semindex.vector_changes WHERE version_id = %(version_id)s AND xid >= %(since)s::xid8 LIMIT %(cap)s) AS p;

-- name: record_recall
UPDATE semindex.ann_generations SET recall = %(recall)s, recall_passed = %(passed)s
WHERE version_id = %(version_id)s AND generation = %(generation)s;

-- name: source_ids
SELECT connector_instance_id, stream, source_id FROM semindex.ann_sources;

-- name: field_ids
SELECT field, field_id FROM semindex.ann_fields;

-- name: rerank
-- The zvec plan's answer: the union of zvec's candidates and every row changed since the
-- generation's horizon, ranked by PostgreSQL's exact distance with the scope applied again, so a
-- row PostgreSQL no longer has never comes back and a fresh one is found at once.
WITH candidates AS (
    SELECT unnest(%(candidates)s::bigint[]) AS chunk_id
    UNION
    SELECT chunk_id FROM semindex.vector_changes WHERE version_id = %(version_id)s AND xid >= %(horizon)s::xid8
)
SELECT v.chunk_id AS key, v.record_key, v.field, v.embedding {operator} %(query)s AS distance, v.connector_instance_id, v.stream
FROM candidates AS c
JOIN {vectors} AS v USING (chunk_id)
WHERE (cardinality(%(instances)s::text[]) = 0
       OR (v.connector_instance_id = ANY(%(instances)s::text[]) AND v.stream = ANY(%(streams)s::text[])))
  AND (cardinality(%(fields)s::text[]) = 0 OR v.field = ANY(%(fields)s::text[]))
  AND (cardinality(%(record_keys)b::text[]) = 0 OR v.record_key = ANY(%(record_keys)b::text[]))
  AND semindex.field_granted(v.stream, v.field, %(rule_streams)s::text[], %(rule_pairs)s::text[])
  AND (%(since)s::timestamptz IS NULL AND %(until)s::timestamptz IS NULL AND cardinality(%(filter_fields)s::text[]) = 0
       OR semindex.record_admitted(v.connector_instance_id, v.stream, v.record_key, %(since)s, %(until)s,
                                   %(filter_fields)s::text[], %(filter_ops)s::text[], %(filter_values)s::text[]))
ORDER BY distance, v.record_key, v.chunk_id
LIMIT %(limit)s;
