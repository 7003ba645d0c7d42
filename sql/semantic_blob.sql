-- The reference server's semantic table, adopted in place: semantic_search_blob(connector_id,
-- connector_instance_id, scope_key, record_key, <embedding>), primary key (connector_instance_id,
-- scope_key, record_key). {table} is the (schema-qualified) table, {column} its embedding column
-- (JSONB before the migration, untyped vector after), {staging} the vector column being backfilled.
-- Every migration step is detectable from the catalog (column types and names, index validity),
-- so no statement here records progress anywhere else.

-- name: relation
-- The table's oid and its estimated row count, by schema and name (NULL when it does not exist).
SELECT c.oid, greatest(c.reltuples, 0)::bigint
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p');

-- name: columns
-- (name, type name, formatted type, not null) of every live column, in table order.
SELECT a.attname, t.typname, format_type(a.atttypid, a.atttypmod), a.attnotnull
FROM pg_attribute AS a
JOIN pg_type AS t ON t.oid = a.atttypid
WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum;

-- name: primary_key
SELECT array_agg(a.attname::text ORDER BY k.ord)
FROM pg_index AS i
CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k (attnum, ord)
JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indrelid = %s AND i.indisprimary;

-- name: index_validity
-- true = valid, false = left invalid (an interrupted CONCURRENTLY build), no row = missing.
SELECT i.indisvalid AND i.indisready
FROM pg_index AS i
JOIN pg_class AS c ON c.oid = i.indexrelid
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname = %s;

-- name: session_settings
SELECT set_config('client_connection_check_interval', '1s', false);

-- name: lock
SELECT pg_advisory_lock(hashtext('semindex.semantic_blob:' || %s));

-- name: try_lock
SELECT pg_try_advisory_lock(hashtext('semindex.semantic_blob:' || %s));

-- name: unlock
SELECT pg_advisory_unlock(hashtext('semindex.semantic_blob:' || %s));

-- name: create_support
-- Rows the migration removes are kept here whole (row_data), with the reason, never just dropped.
-- semantic_blob_embedding_problem says why a JSONB embedding cannot become a pgvector value:
--   null_embedding       SQL NULL
--   not_an_array         JSON null, an object, a string, a number
--   empty_array          []: pgvector has no 0-dimensional vector (the reference server failed
--                        on these at every boot)
--   too_many_dimensions  more than 16,000 elements (pgvector's limit)
--   nan_or_infinity      a string element such as "NaN", "Infinity", "-inf" (JSON numbers cannot
--                        be NaN or infinite, so that is how they appear)
--   null_element         a JSON null element
--   non_numeric_element  any other non-number element: other strings, booleans, objects, arrays
--   out_of_float4_range  a number pgvector's float4 parser rejects: |x| >= FLT_MAX + half an ulp
--                        (340282356779733661637539395458142568448), e.g. 1e39 or 1e400 (JSONB
--                        numbers are numerics, so these can be stored). Tiny numbers (1e-400)
--                        underflow to 0 and are kept, as pgvector keeps them.
-- NULL means the cast succeeds. The fast test comes first: a valid row pays one jsonpath scan.
-- IMMUTABLE LANGUAGE sql with one expression, so the planner inlines it.
SELECT pg_advisory_xact_lock(hashtext('semindex.semantic_blob.support'));
CREATE SCHEMA IF NOT EXISTS semindex;
CREATE TABLE IF NOT EXISTS semindex.quarantined_semantic_blob_rows (
    source_table          text NOT NULL,
    connector_instance_id text NOT NULL,
    scope_key             text NOT NULL,
    record_key            text NOT NULL,
    reason                text NOT NULL,
    row_data              jsonb NOT NULL,
    quarantined_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_table, connector_instance_id, scope_key, record_key)
);
CREATE OR REPLACE FUNCTION semindex.semantic_blob_embedding_problem(embedding jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
SELECT CASE
    WHEN embedding IS NULL THEN 'null_embedding'
    WHEN jsonb_typeof(embedding) <> 'array' THEN 'not_an_array'
    WHEN jsonb_array_length(embedding) = 0 THEN 'empty_array'
    WHEN jsonb_array_length(embedding) > 16000 THEN 'too_many_dimensions'
    WHEN NOT jsonb_path_exists(embedding, 'strict $[*] ? (@.type() != "number" || @ >= 340282356779733661637539395458142568448 || @ <= -340282356779733661637539395458142568448)') THEN NULL
    WHEN jsonb_path_exists(embedding, 'strict $[*] ? (@.type() == "string" && @ like_regex "^[[:space:]]*[+-]?(nan|inf|infinity)[[:space:]]*$" flag "i")') THEN 'nan_or_infinity'
    WHEN jsonb_path_exists(embedding, 'strict $[*] ? (@ == null)') THEN 'null_element'
    WHEN jsonb_path_exists(embedding, 'strict $[*] ? (@.type() != "number")') THEN 'non_numeric_element'
    ELSE 'out_of_float4_range'
END
$$;

-- name: add_staging_column
-- Untyped vector, so rows of several dimensions share the table.
ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {staging} vector;

-- name: pending_count
SELECT count(*) FROM {table} WHERE {staging} IS NULL;

-- name: first_pending_key
-- Where a resumed backfill starts: batches commit in key order, so everything before is done.
SELECT connector_instance_id, scope_key, record_key
FROM {table}
WHERE {staging} IS NULL
ORDER BY connector_instance_id, scope_key, record_key
LIMIT 1;

-- name: batch_settings
-- Each batch must be a range scan of the primary key: a sequential scan and a sort per batch would
-- make the backfill quadratic in the table size.
SELECT set_config('enable_seqscan', 'off', true), set_config('enable_bitmapscan', 'off', true);

-- name: backfill_batch
-- One bounded batch: the next %(batch_size)s keys after the last one ({after} is > or >=). SQL
-- NULL embeddings would cast to NULL silently, so they are quarantined here; any other uncastable
-- row makes the cast fail, and the caller quarantines the batch's bad rows and runs it again.
WITH batch AS (
    SELECT connector_instance_id, scope_key, record_key
    FROM {table}
    WHERE (connector_instance_id, scope_key, record_key) {after} (%(instance)s, %(scope_key)s, %(record_key)s)
    ORDER BY connector_instance_id, scope_key, record_key
    LIMIT %(batch_size)s
), null_embeddings AS (
    DELETE FROM {table} AS t
    USING batch AS b
    WHERE (t.connector_instance_id, t.scope_key, t.record_key) = (b.connector_instance_id, b.scope_key, b.record_key)
      AND t.{column} IS NULL AND t.{staging} IS NULL
    RETURNING t.connector_instance_id, t.scope_key, t.record_key, to_jsonb(t) AS row_data
), quarantined AS (
    INSERT INTO semindex.quarantined_semantic_blob_rows
        (source_table, connector_instance_id, scope_key, record_key, reason, row_data)
    SELECT %(source_table)s, connector_instance_id, scope_key, record_key, 'null_embedding', row_data
    FROM null_embeddings
    ON CONFLICT (source_table, connector_instance_id, scope_key, record_key)
    DO UPDATE SET reason = excluded.reason, row_data = excluded.row_data, quarantined_at = now()
), updated AS (
    UPDATE {table} AS t
    SET {staging} = t.{column}::text::vector
    FROM batch AS b
    WHERE (t.connector_instance_id, t.scope_key, t.record_key) = (b.connector_instance_id, b.scope_key, b.record_key)
      AND t.{staging} IS NULL AND t.{column} IS NOT NULL
    RETURNING 1
), last_key AS (
    SELECT connector_instance_id, scope_key, record_key
    FROM batch
    ORDER BY connector_instance_id DESC, scope_key DESC, record_key DESC
    LIMIT 1
)
SELECT (SELECT count(*) FROM batch), (SELECT count(*) FROM updated), (SELECT count(*) FROM null_embeddings),
       l.connector_instance_id, l.scope_key, l.record_key
FROM (SELECT) AS one
LEFT JOIN last_key AS l ON true;

-- name: quarantine_batch
-- The same batch as backfill_batch after its cast failed: move its uncastable rows to quarantine.
WITH batch AS (
    SELECT connector_instance_id, scope_key, record_key
    FROM {table}
    WHERE (connector_instance_id, scope_key, record_key) {after} (%(instance)s, %(scope_key)s, %(record_key)s)
    ORDER BY connector_instance_id, scope_key, record_key
    LIMIT %(batch_size)s
), problems AS (
    SELECT t.connector_instance_id, t.scope_key, t.record_key,
           semindex.semantic_blob_embedding_problem(t.{column}) AS reason
    FROM {table} AS t
    JOIN batch AS b USING (connector_instance_id, scope_key, record_key)
    WHERE t.{staging} IS NULL
), deleted AS (
    DELETE FROM {table} AS t
    USING problems AS p
    WHERE (t.connector_instance_id, t.scope_key, t.record_key) = (p.connector_instance_id, p.scope_key, p.record_key)
      AND p.reason IS NOT NULL
    RETURNING t.connector_instance_id, t.scope_key, t.record_key, p.reason, to_jsonb(t) AS row_data
), quarantined AS (
    INSERT INTO semindex.quarantined_semantic_blob_rows
        (source_table, connector_instance_id, scope_key, record_key, reason, row_data)
    SELECT %(source_table)s, connector_instance_id, scope_key, record_key, reason, row_data FROM deleted
    ON CONFLICT (source_table, connector_instance_id, scope_key, record_key)
    DO UPDATE SET reason = excluded.reason, row_data = excluded.row_data, quarantined_at = now()
)
SELECT reason, count(*) FROM deleted GROUP BY reason ORDER BY reason;

-- name: lock_table
LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE;

-- name: quarantine_stragglers
-- Inside the swap transaction, under the table lock, only when SET NOT NULL found rows the backfill
-- never saw (written after it passed their keys).
WITH deleted AS (
    DELETE FROM {table} AS t
    WHERE t.{staging} IS NULL AND semindex.semantic_blob_embedding_problem(t.{column}) IS NOT NULL
    RETURNING t.connector_instance_id, t.scope_key, t.record_key,
              semindex.semantic_blob_embedding_problem(t.{column}) AS reason, to_jsonb(t) AS row_data
), quarantined AS (
    INSERT INTO semindex.quarantined_semantic_blob_rows
        (source_table, connector_instance_id, scope_key, record_key, reason, row_data)
    SELECT %(source_table)s, connector_instance_id, scope_key, record_key, reason, row_data FROM deleted
    ON CONFLICT (source_table, connector_instance_id, scope_key, record_key)
    DO UPDATE SET reason = excluded.reason, row_data = excluded.row_data, quarantined_at = now()
)
SELECT reason, count(*) FROM deleted GROUP BY reason ORDER BY reason;

-- name: backfill_stragglers
UPDATE {table} SET {staging} = {column}::text::vector WHERE {staging} IS NULL;

-- name: swap_columns
-- One transaction: the JSONB column and the filled vector column trade places at once, or not at
-- all. SET NOT NULL fails (and the caller casts the stragglers first) if a row was missed.
ALTER TABLE {table} DROP COLUMN {column};
ALTER TABLE {table} RENAME COLUMN {staging} TO {column};
ALTER TABLE {table} ALTER COLUMN {column} SET NOT NULL;

-- name: quarantine_null_vectors
-- After the swap the column is NOT NULL; this only runs if a table was found vector-typed but
-- nullable (migrated by hand), before NOT NULL is set.
WITH deleted AS (
    DELETE FROM {table} AS t WHERE t.{column} IS NULL
    RETURNING t.connector_instance_id, t.scope_key, t.record_key, to_jsonb(t) AS row_data
), quarantined AS (
    INSERT INTO semindex.quarantined_semantic_blob_rows
        (source_table, connector_instance_id, scope_key, record_key, reason, row_data)
    SELECT %(source_table)s, connector_instance_id, scope_key, record_key, 'null_embedding', row_data FROM deleted
    ON CONFLICT (source_table, connector_instance_id, scope_key, record_key)
    DO UPDATE SET reason = excluded.reason, row_data = excluded.row_data, quarantined_at = now()
)
SELECT count(*) FROM deleted;

-- name: set_not_null
ALTER TABLE {table} ALTER COLUMN {column} SET NOT NULL;

-- name: analyze
ANALYZE {table};

-- name: create_index
-- Partial and by expression: only rows of this dimension, cast to a typed vector, are in the graph,
-- so rows of other dimensions in the same table never touch it. A query uses it when it orders by
-- the same expression and says vector_dims({column}) = {dimensions} with the literal.
CREATE INDEX {concurrently} IF NOT EXISTS {index} ON {table}
USING hnsw (({column}::vector({dimensions})) vector_cosine_ops) WITH (m = {m}, ef_construction = {ef_construction})
WHERE vector_dims({column}) = {dimensions};

-- name: row_count
SELECT count(*) FROM {table};

-- name: audit_uncastable
-- JSONB fallback: count the rows the search skips, by reason, without touching them.
SELECT problem, count(*)
FROM {table} AS t
CROSS JOIN LATERAL (SELECT semindex.semantic_blob_embedding_problem(t.{column}) AS problem) AS p
WHERE problem IS NOT NULL
GROUP BY problem
ORDER BY problem;

-- name: scope_count
-- How many rows the scope holds, counted up to %(cap)s only (an index-only scan of the key).
SELECT count(*) FROM (
    SELECT 1
    FROM {table}
    WHERE connector_instance_id = %(instance)s
      AND (cardinality(%(scope_keys)s::text[]) = 0 OR scope_key = ANY(%(scope_keys)s::text[]))
    LIMIT %(cap)s
) AS capped;

-- name: search_ann
-- Orders by the index's expression and repeats its predicate with the literal dimension, so the
-- partial HNSW index can serve it; the scope is applied in the database.
SELECT scope_key AS key, record_key, scope_key AS field,
       {column}::vector({dimensions}) <=> %(query)s::vector({dimensions}) AS distance
FROM {table}
WHERE connector_instance_id = %(instance)s
  AND vector_dims({column}) = {dimensions}
  AND (cardinality(%(scope_keys)s::text[]) = 0 OR scope_key = ANY(%(scope_keys)s::text[]))
ORDER BY {column}::vector({dimensions}) <=> %(query)s::vector({dimensions})
LIMIT %(limit)s;

-- name: search_exact
-- The scoped rows are materialized first, so no index can order them (an HNSW scan under a filter
-- would under-return): exact distance order, NaN (zero vectors) last, ties by record and scope key.
WITH scoped AS MATERIALIZED (
    SELECT record_key, scope_key, {column}::vector({dimensions}) <=> %(query)s::vector({dimensions}) AS distance
    FROM {table}
    WHERE connector_instance_id = %(instance)s
      AND vector_dims({column}) = {dimensions}
      AND (cardinality(%(scope_keys)s::text[]) = 0 OR scope_key = ANY(%(scope_keys)s::text[]))
      AND (cardinality(%(record_keys)b::text[]) = 0 OR record_key = ANY(%(record_keys)b::text[]))
)
SELECT scope_key AS key, record_key, scope_key AS field, distance
FROM scoped
ORDER BY distance, record_key, scope_key
LIMIT %(limit)s;

-- name: search_jsonb_rows
-- JSONB fallback: the scoped rows of the query's dimension as text, read through a server-side
-- cursor and ranked in the client, so the whole scope is ranked before anything is cut.
SELECT scope_key AS key, record_key, scope_key AS field, {column}::text AS embedding
FROM {table}
WHERE connector_instance_id = %(instance)s
  AND jsonb_typeof({column}) = 'array' AND jsonb_array_length({column}) = %(dimensions)s
  AND (cardinality(%(scope_keys)s::text[]) = 0 OR scope_key = ANY(%(scope_keys)s::text[]))
  AND (cardinality(%(record_keys)b::text[]) = 0 OR record_key = ANY(%(record_keys)b::text[]));
