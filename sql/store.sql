-- The vector store (semindex.store): one table of the seed's shape per store. {table} and the
-- column names come from the store's config as identifiers; {domain} is the tenant condition
-- (`domain_id = %(domain)s` for a scoped store, `true` otherwise), {filter} the compiled metadata
-- filter (semindex.store.filters); every value is a bind parameter.

-- name: create_schema
CREATE SCHEMA IF NOT EXISTS {schema};

-- name: create_table
CREATE TABLE IF NOT EXISTS {table} (
    {id}          {id_type} PRIMARY KEY {id_default},
    {domain_id}   varchar(100),
    {document_id} varchar(255),
    {chunk_index} integer,
    {content}     text,
    {embedding}   vector({dimensions}),
    {metadata}    jsonb DEFAULT '{{}}',
    {created_at}  timestamp DEFAULT now()
);

-- name: create_domain_index
-- Every operation of a scoped store filters on the domain.
CREATE INDEX IF NOT EXISTS {index} ON {table} ({domain_id});

-- name: create_metadata_index
-- Equality and IN filters compile to containment (@>), which jsonb_path_ops serves.
CREATE INDEX IF NOT EXISTS {index} ON {table} USING gin ({metadata} jsonb_path_ops);

-- name: relation_exists
-- Checked before CREATE INDEX IF NOT EXISTS, which locks the table even when the index exists (and
-- so would wait on another process's CREATE INDEX CONCURRENTLY, which waits on it: a deadlock).
SELECT to_regclass(%(name)s) IS NOT NULL;

-- name: column_type
SELECT format_type(a.atttypid, a.atttypmod)
FROM pg_attribute AS a
WHERE a.attrelid = to_regclass(%(table)s) AND a.attname = %(column)s AND NOT a.attisdropped;

-- name: ann_indexes
-- Valid HNSW and IVFFlat indexes on the store's embedding column, with their options (lists).
SELECT c.relname AS name, am.amname AS kind, i.indisvalid AS valid, coalesce(c.reloptions, '{{}}') AS options
FROM pg_index AS i
JOIN pg_class AS c ON c.oid = i.indexrelid
JOIN pg_am AS am ON am.oid = c.relam
JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
WHERE i.indrelid = to_regclass(%(table)s) AND a.attname = %(column)s AND am.amname IN ('hnsw', 'ivfflat')
ORDER BY c.relname;

-- name: create_staging
CREATE TEMPORARY TABLE {staging} (
    id text, domain text, document_id text, chunk_index integer, content text,
    embedding vector({dimensions}), metadata jsonb
) ON COMMIT DROP;

-- name: copy_staging
COPY {staging} (id, domain, document_id, chunk_index, content, embedding, metadata) FROM STDIN (FORMAT BINARY);

-- name: foreign_ids
-- Ids of the batch that another domain already holds: a write must not move a row between tenants.
SELECT s.id, t.{domain_id} AS domain
FROM {staging} AS s JOIN {table} AS t ON t.{id} = s.id::{id_type}
WHERE t.{domain_id} IS DISTINCT FROM s.domain
LIMIT 1;

-- name: merge_staging
INSERT INTO {table} ({id}, {domain_id}, {document_id}, {chunk_index}, {content}, {embedding}, {metadata})
SELECT id::{id_type}, domain, document_id, chunk_index, content, embedding, metadata FROM {staging}
ON CONFLICT ({id}) DO UPDATE SET
    {domain_id} = EXCLUDED.{domain_id}, {document_id} = EXCLUDED.{document_id},
    {chunk_index} = EXCLUDED.{chunk_index}, {content} = EXCLUDED.{content},
    {embedding} = EXCLUDED.{embedding}, {metadata} = EXCLUDED.{metadata};

-- name: get
SELECT {id}::text AS id, {embedding} AS embedding, {metadata} AS metadata
FROM {table} WHERE {id} = ANY(%(ids)s::{id_type}[]) AND {domain};

-- name: update_metadata
UPDATE {table} AS t SET {metadata} = u.metadata
FROM unnest(%(ids)s::{id_type}[], %(metadata)s::jsonb[]) AS u(id, metadata)
WHERE t.{id} = u.id AND {domain};

-- name: update_metadata_where
UPDATE {table} SET {metadata} = coalesce({metadata}, '{{}}') || %(patch)s::jsonb
WHERE {domain} AND {filter};

-- name: delete
DELETE FROM {table} WHERE {id} = ANY(%(ids)s::{id_type}[]) AND {domain};

-- name: count
SELECT count(*) FROM {table} WHERE {domain} AND {filter};

-- name: estimate
-- The planner's estimate of the rows a search may see (no rows read).
EXPLAIN (FORMAT JSON) SELECT 1 FROM {table} WHERE {embedding} IS NOT NULL AND {domain} AND {filter};

-- name: clear
DELETE FROM {table} WHERE {domain} AND {filter};

-- name: metadata_fields
SELECT DISTINCT k.key FROM {table}, jsonb_object_keys(coalesce({metadata}, '{{}}')) AS k(key)
WHERE {domain} AND jsonb_typeof(coalesce({metadata}, '{{}}')) = 'object'
ORDER BY k.key;

-- name: search_exact
-- Materialized first, so no index can order the rows: every matching row is ranked.
WITH scoped AS MATERIALIZED (
    SELECT {id}::text AS id, {embedding} {operator} %(query)s AS distance, {metadata} AS metadata
    FROM {table}
    WHERE {embedding} IS NOT NULL AND {domain} AND {filter}
)
SELECT id, distance, metadata FROM scoped ORDER BY distance, id LIMIT %(k)s;

-- name: search_exact_capped
-- Exact while the matching rows fit the cap: up to %(cap)s of them are read once, with their
-- distances; `matched` says whether that was all of them (then the ranking is exact and complete).
WITH scoped AS MATERIALIZED (
    SELECT {id}::text AS id, {embedding} {operator} %(query)s AS distance, {metadata} AS metadata
    FROM {table}
    WHERE {embedding} IS NOT NULL AND {domain} AND {filter}
    LIMIT %(cap)s
)
SELECT id, distance, metadata, (SELECT count(*) FROM scoped) AS matched FROM scoped ORDER BY distance, id LIMIT %(k)s;

-- name: search_ann
-- One sort key, so the planner walks the ANN index; the filter applies during the walk (iterative
-- scans keep going until k rows pass it). Re-sorted by exact distance outside (IVFFlat's relaxed
-- order), ties by id.
WITH walked AS MATERIALIZED (
    SELECT {id}::text AS id, {embedding} {operator} %(query)s AS distance, {metadata} AS metadata
    FROM {table}
    WHERE {embedding} IS NOT NULL AND {domain} AND {filter}
    ORDER BY {embedding} {operator} %(query)s
    LIMIT %(k)s
)
SELECT id, distance, metadata FROM walked ORDER BY distance, id;

-- name: hnsw_settings
SELECT set_config('hnsw.ef_search', %(ef_search)s, true),
       set_config('hnsw.iterative_scan', 'strict_order', true),
       set_config('hnsw.max_scan_tuples', %(max_scan_tuples)s, true);

-- name: ivfflat_settings
SELECT set_config('ivfflat.probes', %(probes)s, true),
       set_config('ivfflat.iterative_scan', 'relaxed_order', true),
       set_config('ivfflat.max_probes', %(max_probes)s, true);

-- name: index_lock
-- Two processes creating the same index: one builds it, the other waits and then finds it. Tried,
-- not waited on: a waiting statement is a transaction, which CREATE INDEX CONCURRENTLY in the
-- holder would wait for in turn (a deadlock).
SELECT pg_try_advisory_lock(hashtextextended(%(key)s, 0));

-- name: index_unlock
SELECT pg_advisory_unlock(hashtextextended(%(key)s, 0));

-- name: index_state
SELECT i.indisvalid FROM pg_index AS i WHERE i.indexrelid = to_regclass(%(index)s);

-- name: drop_index
DROP INDEX CONCURRENTLY IF EXISTS {index};

-- name: create_hnsw
CREATE INDEX {concurrently} IF NOT EXISTS {index} ON {table} USING hnsw ({embedding} {opclass})
WITH (m = {m}, ef_construction = {ef_construction});

-- name: create_ivfflat
CREATE INDEX {concurrently} IF NOT EXISTS {index} ON {table} USING ivfflat ({embedding} {opclass})
WITH (lists = {lists});

-- name: row_estimate
-- The table's rows without counting them: the planner's statistics, else an exact count if small.
SELECT greatest(c.reltuples, 0)::bigint FROM pg_class AS c WHERE c.oid = to_regclass(%(table)s);

-- name: count_all
-- Every row, whatever its domain (whether an index build must go CONCURRENTLY, and IVFFlat's lists).
SELECT count(*) FROM {table};
