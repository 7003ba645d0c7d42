-- Chunks: the pending-record queue, staging and the per-batch reconciliation.

-- name: pending_count
SELECT count(*) FROM semindex.raw_records WHERE chunked_sha256 IS DISTINCT FROM content_sha256;

-- name: pending_batch
SELECT record_id, content_sha256, connector_id, connector_instance_id, stream, record_key, fields, deleted
FROM semindex.raw_records
WHERE chunked_sha256 IS DISTINCT FROM content_sha256 AND record_id > %s
ORDER BY record_id
LIMIT %s;

-- name: writer_lock
-- One chunk writer at a time: chunk ids then commit in the order they were handed out, which the
-- embedding backfill's watermark relies on.
SELECT pg_advisory_xact_lock(hashtext('semindex.chunk_writer'));

-- name: lock_unchanged
-- The batch's records whose content is still what was read (and chunked); others stay pending.
SELECT r.record_id
FROM semindex.raw_records AS r
JOIN unnest(%s::bigint[], %s::bytea[]) AS read(record_id, content_sha256) USING (record_id)
WHERE r.content_sha256 = read.content_sha256
ORDER BY r.record_id
FOR NO KEY UPDATE OF r;

-- name: create_staging
CREATE TEMP TABLE staged_chunks (
    record_id             bigint NOT NULL,
    connector_id          text NOT NULL,
    connector_instance_id text NOT NULL,
    stream                text NOT NULL,
    record_key            text NOT NULL,
    field                 text NOT NULL,
    chunk_no              integer NOT NULL,
    content               text NOT NULL,
    content_sha256        bytea NOT NULL,
    semantic_key          bytea NOT NULL
) ON COMMIT DROP;

-- name: copy_staging
COPY staged_chunks (record_id, connector_id, connector_instance_id, stream, record_key, field,
                    chunk_no, content, content_sha256, semantic_key) FROM STDIN;

-- name: delete_stale
-- Old chunks of the batch's records that the new cut no longer produces; vectors cascade.
DELETE FROM semindex.chunks AS c
WHERE c.record_id = ANY(%s)
  AND NOT EXISTS (SELECT 1 FROM staged_chunks AS s WHERE s.semantic_key = c.semantic_key);

-- name: insert_new
INSERT INTO semindex.chunks
    (record_id, connector_id, connector_instance_id, stream, record_key, field, chunk_no, content,
     content_sha256, semantic_key)
SELECT record_id, connector_id, connector_instance_id, stream, record_key, field, chunk_no, content,
       content_sha256, semantic_key
FROM staged_chunks
ORDER BY record_id, field, chunk_no
ON CONFLICT (semantic_key) DO NOTHING;

-- name: staged_count
SELECT count(*) FROM staged_chunks;

-- name: mark_records_chunked
WITH marked AS (
    UPDATE semindex.raw_records SET chunked_sha256 = content_sha256
    WHERE record_id = ANY(%s)
    RETURNING connector_instance_id, stream
)
INSERT INTO semindex.retained_size_projection AS p (connector_instance_id, stream, dirty)
SELECT DISTINCT connector_instance_id, stream, true FROM marked
ORDER BY connector_instance_id, stream
ON CONFLICT (connector_instance_id, stream) DO UPDATE SET dirty = true;

-- name: remove_lexical_documents
-- The records' lexical documents go, and the per-source term statistics drop by exactly what they
-- held (add_lexical_documents then writes the current ones): a batch costs what it changed.
WITH removed AS (
    DELETE FROM semindex.lexical_documents WHERE record_id = ANY(%(records)s)
    RETURNING connector_instance_id, stream, document, token_count
), terms AS (
    INSERT INTO semindex.lexical_terms AS t (connector_instance_id, stream, lexeme, documents)
    SELECT d.connector_instance_id, d.stream, u.lexeme, -count(*)
    FROM removed AS d, unnest(d.document) AS u
    GROUP BY d.connector_instance_id, d.stream, u.lexeme
    ORDER BY 1, 2, 3
    ON CONFLICT (connector_instance_id, stream, lexeme) DO UPDATE SET documents = t.documents + excluded.documents
    RETURNING 1
), sources AS (
    INSERT INTO semindex.lexical_sources AS s (connector_instance_id, stream, documents, tokens)
    SELECT connector_instance_id, stream, -count(*), -sum(token_count) FROM removed
    GROUP BY connector_instance_id, stream
    ORDER BY 1, 2
    ON CONFLICT (connector_instance_id, stream)
    DO UPDATE SET documents = s.documents + excluded.documents, tokens = s.tokens + excluded.tokens
    RETURNING 1
)
SELECT (SELECT count(*) FROM removed) AS documents, (SELECT count(*) FROM terms) AS terms;

-- name: add_lexical_documents
-- The records' current fields as lexical documents (none for a deleted record), and the statistics
-- up by what they hold. Fields are NFC-normalised as chunking does; whitespace needs no folding, the
-- text-search parser skips it.
WITH parsed AS (
    SELECT r.record_id, f.key AS field, r.connector_instance_id, r.stream, r.record_key,
           to_tsvector('simple', left(normalize(f.value, NFC), 262144)) AS document
    FROM semindex.raw_records AS r
    CROSS JOIN LATERAL jsonb_each_text(r.fields) AS f
    WHERE r.record_id = ANY(%(records)s) AND NOT r.deleted
), added AS (
    INSERT INTO semindex.lexical_documents (record_id, field, connector_instance_id, stream, record_key, document, token_count)
    SELECT p.record_id, p.field, p.connector_instance_id, p.stream, p.record_key, p.document,
           (SELECT coalesce(sum(cardinality(u.positions)), 0) FROM unnest(p.document) AS u)
    FROM parsed AS p
    WHERE length(p.document) > 0
    RETURNING connector_instance_id, stream, document, token_count
), terms AS (
    INSERT INTO semindex.lexical_terms AS t (connector_instance_id, stream, lexeme, documents)
    SELECT a.connector_instance_id, a.stream, u.lexeme, count(*)
    FROM added AS a, unnest(a.document) AS u
    GROUP BY a.connector_instance_id, a.stream, u.lexeme
    ORDER BY 1, 2, 3
    ON CONFLICT (connector_instance_id, stream, lexeme) DO UPDATE SET documents = t.documents + excluded.documents
    RETURNING 1
), sources AS (
    INSERT INTO semindex.lexical_sources AS s (connector_instance_id, stream, documents, tokens)
    SELECT connector_instance_id, stream, count(*), sum(token_count) FROM added
    GROUP BY connector_instance_id, stream
    ORDER BY 1, 2
    ON CONFLICT (connector_instance_id, stream)
    DO UPDATE SET documents = s.documents + excluded.documents, tokens = s.tokens + excluded.tokens
    RETURNING 1
)
SELECT (SELECT count(*) FROM added) AS documents, (SELECT count(*) FROM terms) AS terms;

-- name: lexical_backfill_state
SELECT watermark, done FROM semindex.lexical_backfill FOR UPDATE;

-- name: pending_lexical_backfill
SELECT count(*) FROM semindex.raw_records WHERE record_id > %s AND chunked_sha256 IS NOT NULL;

-- name: lexical_backfill_batch
-- Records chunked before lexical documents existed, in id order after the watermark.
SELECT record_id FROM semindex.raw_records
WHERE record_id > %s AND chunked_sha256 IS NOT NULL
ORDER BY record_id
LIMIT %s;

-- name: lexical_backfill_advance
UPDATE semindex.lexical_backfill SET watermark = %(watermark)s, done = %(done)s;
