-- The semindex schema. Every statement is idempotent: bootstrap runs it on empty and on existing
-- databases alike.
-- name: create
CREATE SCHEMA IF NOT EXISTS semindex;

CREATE TABLE IF NOT EXISTS semindex.raw_records (
    record_id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    connector_id          text NOT NULL,
    connector_instance_id text NOT NULL,
    stream                text NOT NULL,
    record_key            text NOT NULL,
    fields                jsonb NOT NULL,
    updated_at            timestamptz NOT NULL,
    deleted               boolean NOT NULL DEFAULT false,
    -- sha256 over connector id, fields and the deleted flag: an unchanged record is never rewritten.
    content_sha256        bytea NOT NULL,
    -- the content hash the current chunks were cut from; differs from content_sha256 while the
    -- record waits for (re-)chunking.
    chunked_sha256        bytea,
    first_seen_at         timestamptz NOT NULL DEFAULT now(),
    changed_at            timestamptz NOT NULL DEFAULT now(),
    UNIQUE (connector_instance_id, stream, record_key)
);

-- Keeps "which records need chunking" an index scan however large the table grows.
CREATE INDEX IF NOT EXISTS raw_records_pending_chunking
    ON semindex.raw_records (record_id)
    WHERE chunked_sha256 IS DISTINCT FROM content_sha256;

CREATE TABLE IF NOT EXISTS semindex.quarantined_records (
    quarantine_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source_file     text NOT NULL,
    source_sha256   bytea NOT NULL,
    line_no         integer NOT NULL,
    reason          text NOT NULL,
    raw_excerpt     text NOT NULL,
    quarantined_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (source_sha256, line_no)
);

-- Files already ingested, by content: re-running on an unchanged file skips it.
CREATE TABLE IF NOT EXISTS semindex.ingested_files (
    source_sha256   bytea PRIMARY KEY,
    source_file     text NOT NULL,
    line_count      integer NOT NULL,
    ingested_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS semindex.chunks (
    chunk_id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    record_id             bigint NOT NULL REFERENCES semindex.raw_records (record_id) ON DELETE CASCADE,
    connector_id          text NOT NULL,
    connector_instance_id text NOT NULL,
    stream                text NOT NULL,
    record_key            text NOT NULL,
    field                 text NOT NULL,
    chunk_no              integer NOT NULL,
    content               text NOT NULL,
    content_sha256        bytea NOT NULL,
    -- sha256(doc_id || ':' || chunk_no || ':' || normalized_text): identity that survives re-chunking.
    semantic_key          bytea NOT NULL UNIQUE,
    document              tsvector GENERATED ALWAYS AS (to_tsvector('simple', content)) STORED,
    created_at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS chunks_record ON semindex.chunks (record_id);
CREATE INDEX IF NOT EXISTS chunks_scope ON semindex.chunks (connector_instance_id, stream);

CREATE TABLE IF NOT EXISTS semindex.embedding_versions (
    version_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    version_key       text NOT NULL UNIQUE CHECK (version_key ~ '^[A-Za-z0-9][A-Za-z0-9._@-]{{0,62}}$'),
    encoder_name      text NOT NULL,
    encoder_revision  text NOT NULL,
    dimensions        integer NOT NULL CHECK (dimensions BETWEEN 1 AND 16000),
    distance_metric   text NOT NULL CHECK (distance_metric IN ('cosine', 'l2', 'ip')),
    active            boolean NOT NULL DEFAULT false,
    state             text NOT NULL DEFAULT 'registered'
                      CHECK (state IN ('registered', 'backfilling', 'ready', 'retired')),
    created_at        timestamptz NOT NULL DEFAULT now()
);
-- At most one version serves queries.
CREATE UNIQUE INDEX IF NOT EXISTS embedding_versions_one_active
    ON semindex.embedding_versions ((true)) WHERE active;

-- Per-version backfill watermark: the highest chunk_id whose vector is committed.
CREATE TABLE IF NOT EXISTS semindex.embedding_backfill (
    version_id      bigint PRIMARY KEY REFERENCES semindex.embedding_versions (version_id) ON DELETE CASCADE,
    watermark       bigint NOT NULL DEFAULT 0,
    encoded_texts   bigint NOT NULL DEFAULT 0,
    reused_vectors  bigint NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS semindex.retained_size_projection (
    connector_instance_id text NOT NULL,
    stream                text NOT NULL,
    record_count          bigint NOT NULL DEFAULT 0,
    chunk_count           bigint NOT NULL DEFAULT 0,
    embedded_counts       jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    bytes                 bigint NOT NULL DEFAULT 0,
    -- set by every write that changes the source; search trusts only clean rows.
    dirty                 boolean NOT NULL DEFAULT true,
    computed_at           timestamptz,
    PRIMARY KEY (connector_instance_id, stream)
);

-- The hot-source partial HNSW indexes currently managed, per version.
CREATE TABLE IF NOT EXISTS semindex.partial_hnsw_indexes (
    version_id            bigint NOT NULL REFERENCES semindex.embedding_versions (version_id) ON DELETE CASCADE,
    connector_instance_id text NOT NULL,
    stream                text NOT NULL,
    index_name            text NOT NULL UNIQUE,
    row_estimate          bigint NOT NULL,
    created_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (version_id, connector_instance_id, stream)
);
