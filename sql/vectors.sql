-- One vector table per embedding version, so each version has its own HNSW graph and a query
-- touches only its own rows. {vectors} is semindex.chunk_vectors_v<version_id>.
-- Without pgvector (JSONB mode) the same table holds each vector as a JSON array of numbers, checked
-- on write as vector(d) would be: an array of exactly d numbers.

-- name: create_table_lock
-- Held until the creating transaction ends: CREATE TABLE IF NOT EXISTS is not safe against itself (two
-- backfill workers starting together both pass the check and one fails on pg_type's unique index).
SELECT pg_advisory_xact_lock(hashtextextended('semindex.create_table:' || %s, 0));

-- name: create_table
CREATE TABLE IF NOT EXISTS {vectors} (
    chunk_id              bigint PRIMARY KEY REFERENCES semindex.chunks (chunk_id) ON DELETE CASCADE,
    connector_instance_id text NOT NULL,
    stream                text NOT NULL,
    record_key            text NOT NULL,
    field                 text NOT NULL,
    content_sha256        bytea NOT NULL,
    embedding             vector({dimensions}) NOT NULL,
    -- This row stands for its text in the version's graph (sql/schema.sql: represent_texts).
    represents_text       boolean NOT NULL DEFAULT false
);
CREATE INDEX IF NOT EXISTS {scope_index} ON {vectors} (connector_instance_id, stream, record_key);
CREATE INDEX IF NOT EXISTS {content_index} ON {vectors} (content_sha256);
-- A scope of fields alone, when the fields are a small share of the version, is one exact statement
-- over these rows (semindex.search.planner): without the index it would read the whole table.
CREATE INDEX IF NOT EXISTS {field_index} ON {vectors} (field, connector_instance_id, stream);
SELECT semindex.keep_text_representatives({vectors_name}::regclass);
INSERT INTO semindex.embedding_backfill (version_id) VALUES ({version_id}) ON CONFLICT DO NOTHING;

-- name: create_table_jsonb
CREATE TABLE IF NOT EXISTS {vectors} (
    chunk_id              bigint PRIMARY KEY REFERENCES semindex.chunks (chunk_id) ON DELETE CASCADE,
    connector_instance_id text NOT NULL,
    stream                text NOT NULL,
    record_key            text NOT NULL,
    field                 text NOT NULL,
    content_sha256        bytea NOT NULL,
    -- CASE, not AND: jsonb_array_length raises on a scalar, and AND does not fix evaluation order.
    embedding             jsonb NOT NULL CONSTRAINT {embedding_check} CHECK (CASE
        WHEN jsonb_typeof(embedding) = 'array'
        THEN jsonb_array_length(embedding) = {dimensions}
             AND NOT jsonb_path_exists(embedding, '$[*] ? (@.type() != "number")')
        ELSE false END),
    represents_text       boolean NOT NULL DEFAULT false
);
CREATE INDEX IF NOT EXISTS {scope_index} ON {vectors} (connector_instance_id, stream, record_key);
CREATE INDEX IF NOT EXISTS {content_index} ON {vectors} (content_sha256);
SELECT semindex.keep_text_representatives({vectors_name}::regclass);
INSERT INTO semindex.embedding_backfill (version_id) VALUES ({version_id}) ON CONFLICT DO NOTHING;

-- name: column_type
SELECT format_type(a.atttypid, a.atttypmod)
FROM pg_attribute a
WHERE a.attrelid = to_regclass(%s) AND a.attname = 'embedding' AND NOT a.attisdropped;

-- name: watermark
SELECT watermark, encoded_texts, reused_vectors FROM semindex.embedding_backfill WHERE version_id = %s;

-- name: pending_count
SELECT count(*) FROM semindex.chunks WHERE chunk_id > %s;

-- name: create_staging
CREATE TEMP TABLE staged_vectors (
    content_sha256 bytea NOT NULL,
    embedding      vector NOT NULL
) ON COMMIT DROP;

-- name: copy_staging
-- Binary COPY either way: pgvector's binary vector, or (JSONB mode) jsonb's binary text form.
COPY staged_vectors (content_sha256, embedding) FROM STDIN WITH (FORMAT BINARY);

-- name: create_staging_jsonb
-- JSONB mode: the same staging, with each vector as a JSON array (insert_batch serves both).
CREATE TEMP TABLE staged_vectors (
    content_sha256 bytea NOT NULL,
    embedding      jsonb NOT NULL
) ON COMMIT DROP;

-- Parallel backfill (semindex.backfill_claims, semindex.embeddings). A worker leases a range of chunk
-- ids (after, through] above the watermark, encodes the texts its range owns outside any transaction,
-- and writes its vectors, marks the range done and moves the watermark in one transaction. Every
-- write transaction and every carve of a new range first locks the version's backfill row, so they
-- see each other's commits; encoding, the long part, runs in parallel.

-- name: lock_backfill
SELECT watermark FROM semindex.embedding_backfill WHERE version_id = %s FOR UPDATE;

-- name: planned_through
-- The end of everything carved so far (the ranges tile (watermark, planned_through]).
SELECT greatest(%(watermark)s::bigint, max(through_chunk)) AS planned_through
FROM semindex.embedding_claims WHERE version_id = %(version_id)s;

-- name: hold_liveness
-- A worker's session holds this lock while it lives: when its process dies, its connection closes and
-- the lock is gone at once, so its ranges need not wait for their leases.
SELECT pg_try_advisory_lock(%(namespace)s::int4, %(holder_lock)s::int4);

-- name: take_over_expired
-- A range whose worker is gone (its liveness lock is free) or stopped renewing its lease (stuck, cut
-- off): the lowest one, skipping any another worker is taking over right now.
WITH live AS (
    SELECT l.objid::bigint AS holder_lock FROM pg_locks AS l
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 AND l.classid = %(namespace)s::bigint::oid
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
), expired AS (
    SELECT c.version_id, c.after_chunk FROM semindex.embedding_claims AS c
    WHERE c.version_id = %(version_id)s AND NOT c.done
      AND (c.leased_until < clock_timestamp() OR c.holder_lock NOT IN (SELECT holder_lock FROM live))
    ORDER BY c.after_chunk
    LIMIT 1
    FOR UPDATE OF c SKIP LOCKED
)
UPDATE semindex.embedding_claims AS c
SET worker = %(worker)s, holder_lock = %(holder_lock)s, lease_token = %(token)s, attempts = c.attempts + 1,
    leased_until = clock_timestamp() + make_interval(secs => %(lease_seconds)s)
FROM expired
WHERE c.version_id = expired.version_id AND c.after_chunk = expired.after_chunk
RETURNING c.after_chunk, c.through_chunk, c.attempts;

-- name: next_range
SELECT max(chunk_id) AS through_chunk, count(*) AS chunk_count FROM (
    SELECT chunk_id FROM semindex.chunks WHERE chunk_id > %s ORDER BY chunk_id LIMIT %s
) AS next;

-- name: insert_claim
INSERT INTO semindex.embedding_claims (version_id, after_chunk, through_chunk, worker, holder_lock, lease_token, leased_until)
VALUES (%(version_id)s, %(after)s, %(through)s, %(worker)s, %(holder_lock)s, %(token)s,
        clock_timestamp() + make_interval(secs => %(lease_seconds)s));

-- name: own_texts
-- The new range owns its texts that have no vector and no live owner (an earlier range still at work).
INSERT INTO semindex.embedding_text_claims (version_id, content_sha256, after_chunk)
SELECT DISTINCT %(version_id)s::bigint, c.content_sha256, %(after)s::bigint
FROM semindex.chunks AS c
WHERE c.chunk_id > %(after)s AND c.chunk_id <= %(through)s
  AND NOT EXISTS (SELECT 1 FROM {vectors} AS v WHERE v.content_sha256 = c.content_sha256)
ON CONFLICT (version_id, content_sha256) DO NOTHING;

-- name: renew_lease
UPDATE semindex.embedding_claims
SET leased_until = clock_timestamp() + make_interval(secs => %(lease_seconds)s)
WHERE version_id = %(version_id)s AND after_chunk = %(after)s AND lease_token = %(token)s AND NOT done;

-- name: claimed_chunks
SELECT chunk_id, content_sha256, content FROM semindex.chunks
WHERE chunk_id > %s AND chunk_id <= %s ORDER BY chunk_id;

-- name: owned_texts
SELECT content_sha256 FROM semindex.embedding_text_claims WHERE version_id = %s AND after_chunk = %s;

-- name: complete_claim
-- Only the lease holder completes a range: a worker whose lease was taken over writes nothing.
UPDATE semindex.embedding_claims SET done = true
WHERE version_id = %(version_id)s AND after_chunk = %(after)s AND lease_token = %(token)s AND NOT done;

-- name: claim_targets
-- The chunks a completed range writes: its own, and those of later ranges holding a text it owns
-- (they left them to it). Dropped at commit.
CREATE TEMP TABLE claim_targets ON COMMIT DROP AS
SELECT c.chunk_id, c.connector_instance_id, c.stream, c.record_key, c.field, c.content_sha256
FROM semindex.chunks AS c
WHERE c.chunk_id > %(after)s AND c.chunk_id <= %(through)s
UNION ALL
SELECT c.chunk_id, c.connector_instance_id, c.stream, c.record_key, c.field, c.content_sha256
FROM semindex.chunks AS c
JOIN semindex.embedding_text_claims AS t
  ON t.version_id = %(version_id)s AND t.after_chunk = %(after)s AND t.content_sha256 = c.content_sha256
WHERE c.chunk_id > %(through)s AND c.chunk_id <= %(planned)s;

-- name: insert_claimed
-- Every target gets the vector of its text: freshly encoded (staged) or shared from a chunk with the
-- same content hash that has one. A target whose text another live range owns is left to that range.
-- The first target of a text no row represents yet represents it (sql/schema.sql: represent_texts).
INSERT INTO {vectors} (chunk_id, connector_instance_id, stream, record_key, field, content_sha256, embedding,
                       represents_text)
SELECT c.chunk_id, c.connector_instance_id, c.stream, c.record_key, c.field, c.content_sha256,
       coalesce(s.embedding, shared.embedding),
       row_number() OVER (PARTITION BY c.content_sha256 ORDER BY c.chunk_id) = 1
       AND NOT EXISTS (SELECT 1 FROM {vectors} AS r WHERE r.content_sha256 = c.content_sha256 AND r.represents_text)
FROM claim_targets AS c
LEFT JOIN staged_vectors AS s ON s.content_sha256 = c.content_sha256
LEFT JOIN LATERAL (
    SELECT v.embedding FROM {vectors} AS v
    WHERE s.content_sha256 IS NULL AND v.content_sha256 = c.content_sha256
    LIMIT 1
) AS shared ON true
WHERE coalesce(s.embedding, shared.embedding) IS NOT NULL
ON CONFLICT (chunk_id) DO NOTHING;

-- name: targets_without_vector
-- Targets still without a vector whose text no other live range owns: the only copy of their text
-- the owner had was deleted before it read it. Encoded inside the transaction (rare).
SELECT DISTINCT ON (t.content_sha256) t.content_sha256, c.content
FROM claim_targets AS t
JOIN semindex.chunks AS c USING (chunk_id)
WHERE NOT EXISTS (SELECT 1 FROM {vectors} AS v WHERE v.chunk_id = t.chunk_id)
  AND NOT EXISTS (SELECT 1 FROM semindex.embedding_text_claims AS o
                  WHERE o.version_id = %(version_id)s AND o.content_sha256 = t.content_sha256
                    AND o.after_chunk <> %(after)s)
ORDER BY t.content_sha256;

-- name: mark_sources_dirty
-- The sources whose vectors this write touched: their retained-size rows are stale now.
INSERT INTO semindex.retained_size_projection AS p (connector_instance_id, stream, dirty)
SELECT DISTINCT connector_instance_id, stream, true FROM claim_targets
ORDER BY connector_instance_id, stream
ON CONFLICT (connector_instance_id, stream) DO UPDATE SET dirty = true;

-- name: release_texts
DELETE FROM semindex.embedding_text_claims WHERE version_id = %s AND after_chunk = %s;

-- name: advance_watermark
-- The watermark moves to the start of the lowest range not done, or over everything carved once all
-- are: every range below it is done, and so is the owner of every text in them (an earlier range).
UPDATE semindex.embedding_backfill AS b
SET watermark = greatest(b.watermark, coalesce(
        (SELECT min(c.after_chunk) FROM semindex.embedding_claims AS c
         WHERE c.version_id = b.version_id AND NOT c.done),
        %(planned)s)),
    encoded_texts = b.encoded_texts + %(encoded)s,
    reused_vectors = b.reused_vectors + %(reused)s,
    updated_at = now()
WHERE b.version_id = %(version_id)s
RETURNING b.watermark, b.encoded_texts + b.reused_vectors AS chunks_done;

-- name: trim_claims
DELETE FROM semindex.embedding_claims WHERE version_id = %s AND done AND through_chunk <= %s;

-- name: outstanding_claims
-- Ranges not done yet, and how long until the first of their leases runs out.
SELECT count(*) AS claims,
       coalesce(extract(epoch FROM min(leased_until) - clock_timestamp()), 0)::float8 AS next_expiry_seconds
FROM semindex.embedding_claims WHERE version_id = %s AND NOT done;

-- name: forget_claims
DELETE FROM semindex.embedding_claims WHERE version_id = %s;

-- name: set_ready_when_caught_up
-- Ready once nothing is pending: no range is being worked on and no chunk is above the watermark.
-- A retired version stays retired.
UPDATE semindex.embedding_versions AS v SET state = 'ready'
WHERE v.version_id = %(version_id)s AND v.state <> 'retired'
  AND NOT EXISTS (SELECT 1 FROM semindex.embedding_claims AS c WHERE c.version_id = v.version_id AND NOT c.done)
  AND NOT EXISTS (SELECT 1 FROM semindex.chunks AS c
                  WHERE c.chunk_id > coalesce((SELECT b.watermark FROM semindex.embedding_backfill AS b
                                               WHERE b.version_id = v.version_id), 0));

-- name: copy_version_rows
-- Straight into a version's table: bulk loads of known vectors (benchmarks, tests).
COPY {vectors} (chunk_id, connector_instance_id, stream, record_key, field, content_sha256, embedding)
FROM STDIN WITH (FORMAT BINARY);

-- name: keep_text_representatives
-- A table made before represents_text existed gets it once (sql/schema.sql); a no-op after that.
SELECT semindex.keep_text_representatives(%s::regclass);

-- name: represent_texts
-- After a bulk COPY: the first row of each new text represents it.
SELECT semindex.represent_texts(%s::regclass);

-- name: table_exists
SELECT to_regclass(%s) IS NOT NULL;

-- name: table_bytes
SELECT pg_total_relation_size(%s::regclass);

