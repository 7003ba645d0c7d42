-- Raw records: staging, set-based upsert by content hash, tombstones, quarantine and the file ledger.

-- name: create_staging
CREATE TEMP TABLE staged_raw_records (
    line_no               integer NOT NULL,
    connector_id          text NOT NULL,
    connector_instance_id text NOT NULL,
    stream                text NOT NULL,
    record_key            text NOT NULL,
    fields                jsonb NOT NULL,
    updated_at            timestamptz NOT NULL,
    deleted               boolean NOT NULL,
    content_sha256        bytea NOT NULL
) ON COMMIT DROP;

-- name: copy_staging
COPY staged_raw_records (line_no, connector_id, connector_instance_id, stream, record_key, fields,
                         updated_at, deleted, content_sha256) FROM STDIN;

-- name: upsert_from_staging
-- The same key twice in one batch: the newest updated_at wins, then the later line. A stored record
-- newer than the incoming one is kept. An incoming record with the stored content and a newer
-- updated_at moves only updated_at forward (fields kept as stored, changed_at untouched, nothing to
-- re-chunk, not counted): left behind, the stored time would let an older copy with other content,
-- arriving later, pass the newer-or-equal test and overwrite the newest version.
-- changed_at = now() tells content changes from those moves: a row this statement did not change
-- keeps a changed_at from an earlier transaction. Returns (inserted, updated, deleted).
WITH latest AS (
    SELECT DISTINCT ON (connector_instance_id, stream, record_key) *
    FROM staged_raw_records
    ORDER BY connector_instance_id, stream, record_key, updated_at DESC, line_no DESC
), upserted AS (
    INSERT INTO semindex.raw_records AS r
        (connector_id, connector_instance_id, stream, record_key, fields, updated_at, deleted, content_sha256)
    SELECT connector_id, connector_instance_id, stream, record_key, fields, updated_at, deleted, content_sha256
    FROM latest
    ON CONFLICT (connector_instance_id, stream, record_key) DO UPDATE
        SET connector_id   = EXCLUDED.connector_id,
            fields         = CASE WHEN r.content_sha256 = EXCLUDED.content_sha256 THEN r.fields ELSE EXCLUDED.fields END,
            updated_at     = EXCLUDED.updated_at,
            deleted        = EXCLUDED.deleted,
            content_sha256 = EXCLUDED.content_sha256,
            changed_at     = CASE WHEN r.content_sha256 = EXCLUDED.content_sha256 THEN r.changed_at ELSE now() END
        WHERE r.updated_at < EXCLUDED.updated_at
           OR (r.updated_at = EXCLUDED.updated_at AND r.content_sha256 IS DISTINCT FROM EXCLUDED.content_sha256)
    RETURNING (xmax = 0) AS inserted, changed_at = now() AS changed, deleted, connector_instance_id, stream
), dirtied AS (
    INSERT INTO semindex.retained_size_projection AS p (connector_instance_id, stream, dirty)
    SELECT DISTINCT connector_instance_id, stream, true FROM upserted WHERE changed
    ORDER BY connector_instance_id, stream  -- every writer locks projection rows in one order
    ON CONFLICT (connector_instance_id, stream) DO UPDATE SET dirty = true
)
SELECT count(*) FILTER (WHERE inserted AND NOT deleted),
       count(*) FILTER (WHERE changed AND NOT inserted AND NOT deleted),
       count(*) FILTER (WHERE changed AND deleted)
FROM upserted;

-- name: insert_quarantine
INSERT INTO semindex.quarantined_records (source_file, source_sha256, line_no, reason, raw_excerpt)
VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (source_sha256, line_no) DO NOTHING;

-- name: file_already_ingested
SELECT 1 FROM semindex.ingested_files WHERE source_sha256 = %s;

-- name: mark_file_ingested
INSERT INTO semindex.ingested_files (source_sha256, source_file, line_count)
VALUES (%s, %s, %s)
ON CONFLICT (source_sha256) DO UPDATE SET ingested_at = now(), source_file = EXCLUDED.source_file;

-- name: quarantine_count
SELECT count(*) FROM semindex.quarantined_records;
