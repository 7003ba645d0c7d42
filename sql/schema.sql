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

-- Added with the version lifecycle; ADD COLUMN IF NOT EXISTS keeps older databases bootstrappable.
-- encoder_name reads back into an EncoderSpec (kind and location); chunking and thresholds are the
-- version's own, never shared between encoders.
ALTER TABLE semindex.embedding_versions
    ADD COLUMN IF NOT EXISTS chunking         jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    ADD COLUMN IF NOT EXISTS thresholds       jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    ADD COLUMN IF NOT EXISTS promotion        text NOT NULL DEFAULT 'auto',
    -- the version a rollback flips back to: the one the last promotion replaced.
    ADD COLUMN IF NOT EXISTS rollback_target  boolean NOT NULL DEFAULT false,
    ADD COLUMN IF NOT EXISTS retired_at       timestamptz,
    -- the engine that answers the version's ANN plans (semindex.search.engines); exact plans belong
    -- to the database's storage. Fixed for the life of the version, like its encoder.
    ADD COLUMN IF NOT EXISTS ann_engine       text NOT NULL DEFAULT 'pgvector';
CREATE UNIQUE INDEX IF NOT EXISTS embedding_versions_one_rollback_target
    ON semindex.embedding_versions ((true)) WHERE rollback_target;

-- Evaluation verdicts, one row per evaluation of a version. Promotion re-reads the newest one inside
-- the transaction that flips the active version, whatever Dagster ran before it.
CREATE TABLE IF NOT EXISTS semindex.version_evaluations (
    evaluation_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    version_id        bigint NOT NULL REFERENCES semindex.embedding_versions (version_id) ON DELETE CASCADE,
    evaluated_at      timestamptz NOT NULL DEFAULT now(),
    -- the thresholds the verdict was judged against: a verdict under older thresholds does not count.
    thresholds        jsonb NOT NULL,
    judged            jsonb NOT NULL,
    shadow            jsonb NOT NULL,
    failures          text[] NOT NULL,
    passed            boolean NOT NULL
);
CREATE INDEX IF NOT EXISTS version_evaluations_newest ON semindex.version_evaluations (version_id, evaluation_id DESC);

-- Every promotion, rollback and retirement, for `semindex versions list` and audits.
CREATE TABLE IF NOT EXISTS semindex.version_events (
    event_id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    action            text NOT NULL,
    version_id        bigint NOT NULL,
    previous_version_id bigint,
    evaluation_id     bigint,
    happened_at       timestamptz NOT NULL DEFAULT now()
);

-- Per-version backfill watermark: the highest chunk_id whose vector is committed.
CREATE TABLE IF NOT EXISTS semindex.embedding_backfill (
    version_id      bigint PRIMARY KEY REFERENCES semindex.embedding_versions (version_id) ON DELETE CASCADE,
    watermark       bigint NOT NULL DEFAULT 0,
    encoded_texts   bigint NOT NULL DEFAULT 0,
    reused_vectors  bigint NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
-- Parallel backfill (semindex.backfill_claims): workers carve the chunks above a version's watermark
-- into ranges (after_chunk, through_chunk], each leased to one worker (FOR UPDATE SKIP LOCKED) until
-- it is done or its lease runs out and another worker takes it over. The ranges of a version tile
-- (watermark, highest through_chunk]; done ones are removed once the watermark passes them.
CREATE TABLE IF NOT EXISTS semindex.embedding_claims (
    version_id      bigint NOT NULL REFERENCES semindex.embedding_versions (version_id) ON DELETE CASCADE,
    after_chunk     bigint NOT NULL,
    through_chunk   bigint NOT NULL CHECK (through_chunk > after_chunk),
    worker          text NOT NULL,
    -- the holder's liveness: a session advisory lock (semindex.backfill_claims) its connection holds
    -- while it lives; a range whose holder's lock is gone is taken over at once, lease or not.
    holder_lock     integer NOT NULL DEFAULT 0,
    lease_token     uuid NOT NULL,
    leased_until    timestamptz NOT NULL,
    attempts        integer NOT NULL DEFAULT 1,
    done            boolean NOT NULL DEFAULT false,
    PRIMARY KEY (version_id, after_chunk)
);
-- The texts a live range will encode: each text without a vector belongs to the first range carved
-- with it, so two workers never encode the same text; later ranges holding it wait for its owner,
-- which writes their vectors too. Released when the owner is done.
CREATE TABLE IF NOT EXISTS semindex.embedding_text_claims (
    version_id      bigint NOT NULL,
    content_sha256  bytea NOT NULL,
    after_chunk     bigint NOT NULL,
    PRIMARY KEY (version_id, content_sha256),
    FOREIGN KEY (version_id, after_chunk) REFERENCES semindex.embedding_claims (version_id, after_chunk) ON DELETE CASCADE
);
-- Claims tables created before holder_lock existed get it (their ranges then wait for their leases).
-- Only when missing: ALTER TABLE locks the table even when it changes nothing, and bootstrap runs at
-- every process start, while other workers write claims.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_schema = 'semindex' AND table_name = 'embedding_claims' AND column_name = 'holder_lock') THEN
        ALTER TABLE semindex.embedding_claims ADD COLUMN holder_lock integer NOT NULL DEFAULT 0;
    END IF;
END
$$;
CREATE INDEX IF NOT EXISTS embedding_text_claims_owner ON semindex.embedding_text_claims (version_id, after_chunk);

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

-- The hot-field partial HNSW indexes currently managed, per version (semindex.partial_indexes): a
-- scope of one such field walks the field's own graph.
CREATE TABLE IF NOT EXISTS semindex.field_hnsw_indexes (
    version_id   bigint NOT NULL REFERENCES semindex.embedding_versions (version_id) ON DELETE CASCADE,
    field        text NOT NULL,
    index_name   text NOT NULL UNIQUE,
    row_estimate bigint NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (version_id, field)
);

-- Lexical search ranks documents: one per (record, field), the field's whole text as a tsvector
-- (its first 256 KiB: tsvectors are capped at 1 MB), with its length in tokens. They are rewritten
-- with the record's chunks, in the same transaction (semindex.chunks).
CREATE TABLE IF NOT EXISTS semindex.lexical_documents (
    record_id             bigint NOT NULL REFERENCES semindex.raw_records (record_id) ON DELETE CASCADE,
    field                 text NOT NULL,
    connector_instance_id text NOT NULL,
    stream                text NOT NULL,
    record_key            text NOT NULL,
    document              tsvector NOT NULL,
    token_count           integer NOT NULL,
    PRIMARY KEY (record_id, field)
);
CREATE INDEX IF NOT EXISTS lexical_documents_scope ON semindex.lexical_documents (connector_instance_id, stream, record_key);
-- A scope of fields alone whose term floods the window takes the first matches in index order: read
-- through this index it checks only the fields' documents, instead of every document until enough
-- of them are in the fields (a field of 1% of the rows and a term in a third of them: 300 times fewer).
CREATE INDEX IF NOT EXISTS lexical_documents_field ON semindex.lexical_documents (field);

-- BM25's term statistics, per source, kept with every write of lexical documents: how many
-- documents hold each lexeme, and how many documents and tokens the source has.
CREATE TABLE IF NOT EXISTS semindex.lexical_terms (
    connector_instance_id text NOT NULL,
    stream                text NOT NULL,
    lexeme                text NOT NULL,
    documents             bigint NOT NULL,
    PRIMARY KEY (connector_instance_id, stream, lexeme)
);
-- Unscoped searches sum a lexeme's counts over every source.
CREATE INDEX IF NOT EXISTS lexical_terms_lexeme ON semindex.lexical_terms (lexeme);
CREATE TABLE IF NOT EXISTS semindex.lexical_sources (
    connector_instance_id text NOT NULL,
    stream                text NOT NULL,
    documents             bigint NOT NULL,
    tokens                bigint NOT NULL,
    PRIMARY KEY (connector_instance_id, stream)
);
-- Databases chunked before lexical documents existed get theirs once, in record-id batches; this
-- row remembers how far that went (done = every record chunked before it has its documents).
CREATE TABLE IF NOT EXISTS semindex.lexical_backfill (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    watermark   bigint NOT NULL DEFAULT 0,
    done        boolean NOT NULL DEFAULT false
);
-- A new database has nothing to backfill.
INSERT INTO semindex.lexical_backfill (singleton, done)
SELECT true, NOT EXISTS (SELECT 1 FROM semindex.raw_records WHERE chunked_sha256 IS NOT NULL)
ON CONFLICT DO NOTHING;

-- The search's match query from a parsed query (semindex.search.query): any positive word or
-- phrase matches (plain words are OR-ed, and ranked), every required phrase must match, no excluded
-- term may. plainto_tsquery and phraseto_tsquery never fail on any text, and the operators are
-- combined here rather than parsed, so no input can overflow the tsquery parser's stack.
CREATE OR REPLACE AGGREGATE semindex.tsquery_or(tsquery) (SFUNC = tsquery_or, STYPE = tsquery);
CREATE OR REPLACE AGGREGATE semindex.tsquery_and(tsquery) (SFUNC = tsquery_and, STYPE = tsquery);
CREATE OR REPLACE FUNCTION semindex.search_tsquery(words text[], phrases text[], required text[], excluded text[])
RETURNS tsquery LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
SELECT coalesce((SELECT semindex.tsquery_or(q) FROM (
                     SELECT plainto_tsquery('simple', w) FROM unnest(words) AS w
                     UNION ALL SELECT phraseto_tsquery('simple', p) FROM unnest(phrases) AS p) AS t(q)
                 WHERE numnode(q) > 0), ''::tsquery)
    && coalesce((SELECT semindex.tsquery_and(phraseto_tsquery('simple', r)) FROM unnest(required) AS r
                 WHERE numnode(phraseto_tsquery('simple', r)) > 0), ''::tsquery)
    && coalesce((SELECT semindex.tsquery_and(!! phraseto_tsquery('simple', x)) FROM unnest(excluded) AS x
                 WHERE numnode(phraseto_tsquery('simple', x)) > 0), ''::tsquery)
$$;

-- A grant's rules inside its sources (semindex.search.request.Scope), checked in every search
-- statement before any matching or ranking. Fields per stream: a stream in rule_streams is seen
-- only in its listed (stream, field) pairs, joined by U+001F; other streams in every field. Inlined
-- by the planner (a single expression).
CREATE OR REPLACE FUNCTION semindex.field_granted(row_stream text, row_field text, rule_streams text[], rule_pairs text[])
RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN cardinality(rule_streams) = 0 OR row_stream <> ALL(rule_streams) OR (row_stream || chr(31) || row_field) = ANY(rule_pairs);
-- Rules on the record itself, checked per candidate row (callers skip it when there are none): a
-- half-open time range on its updated_at (the HTTP routes' emitted_at), and field filters, each
-- (field, op, value) with op eq, gt, gte, lt or lte; numbers compare as numbers, anything else as
-- text in byte order (so ISO 8601 times compare in time order). A missing field matches no filter.
CREATE OR REPLACE FUNCTION semindex.value_matches(field_value jsonb, op text, wanted text)
RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
SELECT CASE
    WHEN field_value IS NULL OR jsonb_typeof(field_value) IN ('object', 'array', 'null') THEN false
    WHEN op = 'eq' THEN field_value #>> '{{}}' = wanted
    WHEN jsonb_typeof(field_value) = 'number' AND wanted ~ '^\s*-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?\s*$' THEN
        CASE op WHEN 'gt' THEN (field_value #>> '{{}}')::numeric > wanted::numeric
                WHEN 'gte' THEN (field_value #>> '{{}}')::numeric >= wanted::numeric
                WHEN 'lt' THEN (field_value #>> '{{}}')::numeric < wanted::numeric
                WHEN 'lte' THEN (field_value #>> '{{}}')::numeric <= wanted::numeric END
    ELSE
        CASE op WHEN 'gt' THEN (field_value #>> '{{}}') COLLATE "C" > wanted
                WHEN 'gte' THEN (field_value #>> '{{}}') COLLATE "C" >= wanted
                WHEN 'lt' THEN (field_value #>> '{{}}') COLLATE "C" < wanted
                WHEN 'lte' THEN (field_value #>> '{{}}') COLLATE "C" <= wanted END
END
$$;
CREATE OR REPLACE FUNCTION semindex.record_admitted(row_instance text, row_stream text, row_key text,
                                                    since timestamptz, until timestamptz,
                                                    filter_fields text[], filter_ops text[], filter_values text[])
RETURNS boolean LANGUAGE sql STABLE PARALLEL SAFE AS $$
SELECT EXISTS (SELECT 1 FROM semindex.raw_records AS r
               WHERE r.connector_instance_id = row_instance AND r.stream = row_stream AND r.record_key = row_key
                 AND NOT r.deleted
                 AND (since IS NULL OR r.updated_at >= since) AND (until IS NULL OR r.updated_at < until)
                 AND NOT EXISTS (SELECT 1 FROM unnest(filter_fields, filter_ops, filter_values) AS f(name, op, wanted)
                                 WHERE NOT coalesce(semindex.value_matches(r.fields -> f.name, f.op, f.wanted), false)))
$$;

-- Bearer tokens of the HTTP service (semindex.access): only a SHA-256 of each token is kept (tokens
-- are 256 random bits, so a fast hash is enough). An owner token sees everything; a client token
-- sees what its grant allows (its JSON form, semindex.access.Grant). Revocation is a timestamp.
CREATE TABLE IF NOT EXISTS semindex.api_tokens (
    token_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token_sha256  bytea NOT NULL UNIQUE,
    label         text NOT NULL,
    owner         boolean NOT NULL,
    grant_scope   jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz,
    revoked_at    timestamptz,
    CHECK (owner = (grant_scope IS NULL))
);

-- Live shadow traffic (semindex.shadow_traffic): a sample of the search service's semantic and hybrid
-- queries run again on a candidate version after the answer was sent, compared with what the
-- serving version answered. The query itself is not kept, only its hash.
CREATE TABLE IF NOT EXISTS semindex.shadow_observations (
    observation_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    version_id          bigint NOT NULL REFERENCES semindex.embedding_versions (version_id) ON DELETE CASCADE,
    serving_version_id  bigint NOT NULL REFERENCES semindex.embedding_versions (version_id) ON DELETE CASCADE,
    mode                text NOT NULL,
    query_sha256        bytea NOT NULL,
    overlap_at_10       double precision NOT NULL,
    rbo_at_10           double precision NOT NULL,
    observed_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS shadow_observations_version ON semindex.shadow_observations (version_id, serving_version_id);

-- The zvec ANN substrate (semindex.ann_substrate). Change capture: statement-level triggers on a
-- zvec version's vector table append the chunk ids every statement touched (inserts, updates,
-- deletes, cascaded deletes from chunks included) with the writing transaction's id. Vector rows
-- are immutable, so "touched" is all a builder needs: it re-reads the current row.
CREATE TABLE IF NOT EXISTS semindex.vector_changes (
    version_id  bigint NOT NULL,
    chunk_id    bigint NOT NULL,
    xid         xid8 NOT NULL DEFAULT pg_current_xact_id()
);
CREATE INDEX IF NOT EXISTS vector_changes_version_xid ON semindex.vector_changes (version_id, xid);
CREATE OR REPLACE FUNCTION semindex.capture_vector_changes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO semindex.vector_changes (version_id, chunk_id)
    SELECT TG_ARGV[0]::bigint, chunk_id FROM changed_rows;
    RETURN NULL;
END
$$;
-- Generations: immutable zvec collections built from a version's table. The published one serves;
-- its horizon is the durable watermark (every change with a smaller transaction id is in it).
CREATE TABLE IF NOT EXISTS semindex.ann_generations (
    version_id     bigint NOT NULL REFERENCES semindex.embedding_versions (version_id) ON DELETE CASCADE,
    generation     integer NOT NULL,
    horizon        xid8 NOT NULL,
    state          text NOT NULL CHECK (state IN ('published', 'retired')),
    documents      bigint NOT NULL,
    build_seconds  double precision NOT NULL,
    disk_bytes     bigint NOT NULL,
    recall         jsonb NOT NULL DEFAULT '{{}}',
    recall_passed  boolean NOT NULL DEFAULT false,
    published_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (version_id, generation)
);
CREATE UNIQUE INDEX IF NOT EXISTS ann_generations_one_published ON semindex.ann_generations (version_id) WHERE state = 'published';
-- zvec filters take integers only (never user strings): sources and fields get ids here.
CREATE TABLE IF NOT EXISTS semindex.ann_sources (
    source_id             integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    connector_instance_id text NOT NULL,
    stream                text NOT NULL,
    UNIQUE (connector_instance_id, stream)
);
CREATE TABLE IF NOT EXISTS semindex.ann_fields (
    field_id  integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    field     text NOT NULL UNIQUE
);

-- Row counts kept by the writes themselves (semindex.row_counts), so no run counts a table: per
-- counted relation and source, its rows (raw_records: live records), bytes (the text of record
-- fields, chunk content; 0 for the others) and touched (rows ever written: it only grows, so an
-- unchanged figure means an unchanged table). Statement-level triggers append what each statement
-- changed to source_row_deltas (appends never wait on each other, as updates of one counter row
-- would); readers fold the deltas in. A relation is counted in full once, when its triggers are
-- attached (count_relation), under a lock that keeps writers out meanwhile.
CREATE TABLE IF NOT EXISTS semindex.source_rows (
    relation              text NOT NULL,
    connector_instance_id text NOT NULL,
    stream                text NOT NULL,
    rows                  bigint NOT NULL DEFAULT 0,
    bytes                 bigint NOT NULL DEFAULT 0,
    touched               bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (relation, connector_instance_id, stream)
);
CREATE TABLE IF NOT EXISTS semindex.source_row_deltas (
    relation              text NOT NULL,
    connector_instance_id text NOT NULL,
    stream                text NOT NULL,
    rows                  bigint NOT NULL,
    bytes                 bigint NOT NULL,
    touched               bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS source_row_deltas_relation ON semindex.source_row_deltas (relation);
CREATE TABLE IF NOT EXISTS semindex.counted_relations (
    relation    text PRIMARY KEY,
    counted_at  timestamptz NOT NULL DEFAULT now()
);
-- Chunk ids the parity check must look at again (semindex.quality): deleted or moved in chunks or a
-- vector table, or inserted at or below a verified watermark (never in a normal run: ids only grow).
-- xid is the writing transaction; chunk_id NULL records a TRUNCATE (everything changed).
CREATE TABLE IF NOT EXISTS semindex.chunk_id_changes (
    chunk_id  bigint,
    xid       xid8 NOT NULL DEFAULT pg_current_xact_id()
);
CREATE INDEX IF NOT EXISTS chunk_id_changes_xid ON semindex.chunk_id_changes (xid);
-- A version's last passing parity check: every chunk up to chunk_watermark had exactly one vector,
-- and every change by a transaction below horizon was visible to it.
CREATE TABLE IF NOT EXISTS semindex.parity_verified (
    version_id        bigint PRIMARY KEY REFERENCES semindex.embedding_versions (version_id) ON DELETE CASCADE,
    chunk_watermark   bigint NOT NULL,
    horizon           xid8 NOT NULL,
    verified_at       timestamptz NOT NULL DEFAULT now(),
    full_verified_at  timestamptz NOT NULL
);
-- A check's last measurement of a version, kept with the state it measured (semindex.quality): a run
-- on the same state reuses it instead of measuring again.
CREATE TABLE IF NOT EXISTS semindex.check_measurements (
    version_id   bigint NOT NULL REFERENCES semindex.embedding_versions (version_id) ON DELETE CASCADE,
    check_name   text NOT NULL,
    state        text NOT NULL,
    verdict      jsonb NOT NULL,
    measured_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (version_id, check_name)
);
-- The trigger functions, one per shape of counted table. TG_ARGV[0] is the relation's counter name,
-- for a vector table TG_ARGV[1] its version id. Each statement appends one delta row per source it
-- wrote: an update counts as its new rows less its old ones.
CREATE OR REPLACE FUNCTION semindex.reset_counted_rows(counter text) RETURNS void LANGUAGE sql AS $$
    WITH folded AS (
        DELETE FROM semindex.source_row_deltas WHERE relation = counter RETURNING connector_instance_id, stream, touched
    )
    INSERT INTO semindex.source_rows AS s (relation, connector_instance_id, stream, rows, bytes, touched)
    SELECT counter, connector_instance_id, stream, 0, 0, sum(touched) FROM folded
    GROUP BY connector_instance_id, stream ORDER BY connector_instance_id, stream
    ON CONFLICT (relation, connector_instance_id, stream) DO UPDATE SET touched = s.touched + excluded.touched;
    UPDATE semindex.source_rows SET rows = 0, bytes = 0, touched = touched + 1 WHERE relation = counter;
$$;
CREATE OR REPLACE FUNCTION semindex.count_record_rows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM semindex.reset_counted_rows(TG_ARGV[0]);
    ELSIF TG_OP = 'INSERT' THEN
        INSERT INTO semindex.source_row_deltas (relation, connector_instance_id, stream, rows, bytes, touched)
        SELECT TG_ARGV[0], connector_instance_id, stream, count(*) FILTER (WHERE NOT deleted),
               coalesce(sum(octet_length(fields::text)) FILTER (WHERE NOT deleted), 0), count(*)
        FROM new_rows GROUP BY connector_instance_id, stream;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO semindex.source_row_deltas (relation, connector_instance_id, stream, rows, bytes, touched)
        SELECT TG_ARGV[0], connector_instance_id, stream, -count(*) FILTER (WHERE NOT deleted),
               -coalesce(sum(octet_length(fields::text)) FILTER (WHERE NOT deleted), 0), count(*)
        FROM old_rows GROUP BY connector_instance_id, stream;
    ELSE
        INSERT INTO semindex.source_row_deltas (relation, connector_instance_id, stream, rows, bytes, touched)
        SELECT TG_ARGV[0], connector_instance_id, stream, sum(rows), sum(bytes), sum(touched) FROM (
            SELECT connector_instance_id, stream, CASE WHEN deleted THEN 0 ELSE 1 END AS rows,
                   CASE WHEN deleted THEN 0 ELSE octet_length(fields::text) END AS bytes, 1 AS touched
            FROM new_rows
            UNION ALL
            SELECT connector_instance_id, stream, CASE WHEN deleted THEN 0 ELSE -1 END,
                   CASE WHEN deleted THEN 0 ELSE -octet_length(fields::text) END, 0
            FROM old_rows
        ) AS changed
        GROUP BY connector_instance_id, stream;
    END IF;
    RETURN NULL;
END
$$;
CREATE OR REPLACE FUNCTION semindex.count_chunk_rows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM semindex.reset_counted_rows(TG_ARGV[0]);
        INSERT INTO semindex.chunk_id_changes (chunk_id) VALUES (NULL);
    ELSIF TG_OP = 'INSERT' THEN
        INSERT INTO semindex.source_row_deltas (relation, connector_instance_id, stream, rows, bytes, touched)
        SELECT TG_ARGV[0], connector_instance_id, stream, count(*), sum(octet_length(content)), count(*)
        FROM new_rows GROUP BY connector_instance_id, stream;
        INSERT INTO semindex.chunk_id_changes (chunk_id)
        SELECT chunk_id FROM new_rows
        WHERE chunk_id <= (SELECT max(chunk_watermark) FROM semindex.parity_verified);
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO semindex.source_row_deltas (relation, connector_instance_id, stream, rows, bytes, touched)
        SELECT TG_ARGV[0], connector_instance_id, stream, -count(*), -sum(octet_length(content)), count(*)
        FROM old_rows GROUP BY connector_instance_id, stream;
        INSERT INTO semindex.chunk_id_changes (chunk_id) SELECT chunk_id FROM old_rows;
    ELSE
        INSERT INTO semindex.source_row_deltas (relation, connector_instance_id, stream, rows, bytes, touched)
        SELECT TG_ARGV[0], connector_instance_id, stream, sum(rows), sum(bytes), sum(touched) FROM (
            SELECT connector_instance_id, stream, 1 AS rows, octet_length(content) AS bytes, 1 AS touched FROM new_rows
            UNION ALL
            SELECT connector_instance_id, stream, -1, -octet_length(content), 0 FROM old_rows
        ) AS changed
        GROUP BY connector_instance_id, stream;
        INSERT INTO semindex.chunk_id_changes (chunk_id)
        SELECT chunk_id FROM ((SELECT chunk_id FROM old_rows EXCEPT SELECT chunk_id FROM new_rows)
                              UNION (SELECT chunk_id FROM new_rows EXCEPT SELECT chunk_id FROM old_rows)) AS moved;
    END IF;
    RETURN NULL;
END
$$;
CREATE OR REPLACE FUNCTION semindex.count_vector_rows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM semindex.reset_counted_rows(TG_ARGV[0]);
        INSERT INTO semindex.chunk_id_changes (chunk_id) VALUES (NULL);
    ELSIF TG_OP = 'INSERT' THEN
        INSERT INTO semindex.source_row_deltas (relation, connector_instance_id, stream, rows, bytes, touched)
        SELECT TG_ARGV[0], connector_instance_id, stream, count(*), 0, count(*)
        FROM new_rows GROUP BY connector_instance_id, stream;
        INSERT INTO semindex.chunk_id_changes (chunk_id)
        SELECT chunk_id FROM new_rows
        WHERE chunk_id <= (SELECT chunk_watermark FROM semindex.parity_verified WHERE version_id = TG_ARGV[1]::bigint);
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO semindex.source_row_deltas (relation, connector_instance_id, stream, rows, bytes, touched)
        SELECT TG_ARGV[0], connector_instance_id, stream, -count(*), 0, count(*)
        FROM old_rows GROUP BY connector_instance_id, stream;
        INSERT INTO semindex.chunk_id_changes (chunk_id) SELECT chunk_id FROM old_rows;
    ELSE
        INSERT INTO semindex.source_row_deltas (relation, connector_instance_id, stream, rows, bytes, touched)
        SELECT TG_ARGV[0], connector_instance_id, stream, sum(rows), 0, sum(touched) FROM (
            SELECT connector_instance_id, stream, 1 AS rows, 1 AS touched FROM new_rows
            UNION ALL
            SELECT connector_instance_id, stream, -1, 0 FROM old_rows
        ) AS changed
        GROUP BY connector_instance_id, stream;
        INSERT INTO semindex.chunk_id_changes (chunk_id)
        SELECT chunk_id FROM ((SELECT chunk_id FROM old_rows EXCEPT SELECT chunk_id FROM new_rows)
                              UNION (SELECT chunk_id FROM new_rows EXCEPT SELECT chunk_id FROM old_rows)) AS moved;
    END IF;
    RETURN NULL;
END
$$;
CREATE OR REPLACE FUNCTION semindex.count_plain_rows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM semindex.reset_counted_rows(TG_ARGV[0]);
    ELSIF TG_OP = 'INSERT' THEN
        INSERT INTO semindex.source_row_deltas (relation, connector_instance_id, stream, rows, bytes, touched)
        SELECT TG_ARGV[0], connector_instance_id, stream, count(*), 0, count(*)
        FROM new_rows GROUP BY connector_instance_id, stream;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO semindex.source_row_deltas (relation, connector_instance_id, stream, rows, bytes, touched)
        SELECT TG_ARGV[0], connector_instance_id, stream, -count(*), 0, count(*)
        FROM old_rows GROUP BY connector_instance_id, stream;
    ELSE
        INSERT INTO semindex.source_row_deltas (relation, connector_instance_id, stream, rows, bytes, touched)
        SELECT TG_ARGV[0], connector_instance_id, stream, sum(rows), 0, sum(touched) FROM (
            SELECT connector_instance_id, stream, 1 AS rows, 1 AS touched FROM new_rows
            UNION ALL
            SELECT connector_instance_id, stream, -1, 0 FROM old_rows
        ) AS changed
        GROUP BY connector_instance_id, stream;
    END IF;
    RETURN NULL;
END
$$;
-- Attach the counting triggers to `target` and count it once, unless that is done. `shape` is
-- records, chunks, vectors (version_id given) or plain. The lock keeps writers out between the
-- count and the triggers, so no write is missed or counted twice. Returns true when it counted.
CREATE OR REPLACE FUNCTION semindex.count_relation(target regclass, shape text, version_id bigint DEFAULT NULL)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    counter text := (SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class AS c
                     JOIN pg_namespace AS n ON n.oid = c.relnamespace WHERE c.oid = target);
    counting text := CASE shape WHEN 'records' THEN 'semindex.count_record_rows' WHEN 'chunks' THEN 'semindex.count_chunk_rows'
                                WHEN 'vectors' THEN 'semindex.count_vector_rows' WHEN 'plain' THEN 'semindex.count_plain_rows' END;
    arguments text := CASE WHEN shape = 'vectors' THEN format('%L, %L', counter, version_id) ELSE format('%L', counter) END;
    counted boolean := false;
BEGIN
    IF counting IS NULL OR (shape = 'vectors' AND version_id IS NULL) THEN
        RAISE EXCEPTION 'count_relation: unknown shape % (or a vector table without its version id)', shape;
    END IF;
    FOR attempt IN 1..2 LOOP
        IF (SELECT count(*) FROM pg_trigger WHERE tgrelid = target AND tgname LIKE 'semindex_rows_%') = 4
           AND EXISTS (SELECT 1 FROM semindex.counted_relations WHERE relation = counter) THEN
            RETURN counted;
        END IF;
        EXIT WHEN attempt = 2;
        EXECUTE format('LOCK TABLE %s IN SHARE ROW EXCLUSIVE MODE', target);
    END LOOP;
    EXECUTE format('CREATE OR REPLACE TRIGGER semindex_rows_insert AFTER INSERT ON %s REFERENCING NEW TABLE AS new_rows '
                   'FOR EACH STATEMENT EXECUTE FUNCTION %s(%s)', target, counting, arguments);
    EXECUTE format('CREATE OR REPLACE TRIGGER semindex_rows_update AFTER UPDATE ON %s REFERENCING OLD TABLE AS old_rows '
                   'NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION %s(%s)', target, counting, arguments);
    EXECUTE format('CREATE OR REPLACE TRIGGER semindex_rows_delete AFTER DELETE ON %s REFERENCING OLD TABLE AS old_rows '
                   'FOR EACH STATEMENT EXECUTE FUNCTION %s(%s)', target, counting, arguments);
    EXECUTE format('CREATE OR REPLACE TRIGGER semindex_rows_truncate AFTER TRUNCATE ON %s '
                   'FOR EACH STATEMENT EXECUTE FUNCTION %s(%s)', target, counting, arguments);
    DELETE FROM semindex.source_row_deltas WHERE relation = counter;
    DELETE FROM semindex.source_rows WHERE relation = counter;
    EXECUTE format('INSERT INTO semindex.source_rows (relation, connector_instance_id, stream, rows, bytes, touched) '
                   'SELECT %L, connector_instance_id, stream, %s, count(*) FROM %s GROUP BY connector_instance_id, stream',
                   counter,
                   CASE shape WHEN 'records' THEN 'count(*) FILTER (WHERE NOT deleted), '
                                                  'coalesce(sum(octet_length(fields::text)) FILTER (WHERE NOT deleted), 0)'
                              WHEN 'chunks' THEN 'count(*), coalesce(sum(octet_length(content)), 0)'
                              ELSE 'count(*), 0' END,
                   target);
    INSERT INTO semindex.counted_relations (relation) VALUES (counter)
    ON CONFLICT (relation) DO UPDATE SET counted_at = now();
    RETURN true;
END
$$;
SELECT semindex.count_relation('semindex.raw_records', 'records'),
       semindex.count_relation('semindex.chunks', 'chunks'),
       semindex.count_relation('semindex.lexical_documents', 'plain');
-- A version's HNSW graph holds one element per distinct text: the row that represents its text
-- (represents_text; the index's predicate). Thousands of rows of one short text ("ok", "lol") would
-- otherwise be thousands of identical elements whose neighbour lists fill with one another: an
-- island a greedy walk enters and cannot leave (measured at 1M rows: recall 0.0 for queries walked
-- into "Hi\nYo" or "OH" at distance 0.8 while their neighbours lay at 0.5). A walk ranks texts; the
-- search expands each to its rows through the content index.
--
-- Who keeps it: the backfill's insert marks the first row of each new text; a bulk COPY calls
-- represent_texts; deleting a representing row hands the role to the first remaining row of its text
-- (the trigger below). Rows are inserted and deleted, never updated in place (a changed chunk is a new
-- chunk id), and chunk writers are serialized, so no two transactions hand over one text at once.

-- Marks the first row of every text that has no representing row, set-based: after a bulk COPY, and
-- once for a table made before the column existed. Returns the rows marked.
CREATE OR REPLACE FUNCTION semindex.represent_texts(target regclass) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    marked bigint;
BEGIN
    EXECUTE format('UPDATE %1$s AS v SET represents_text = true WHERE v.chunk_id IN ('
                   '  SELECT DISTINCT ON (u.content_sha256) u.chunk_id FROM %1$s AS u'
                   '  WHERE NOT EXISTS (SELECT 1 FROM %1$s AS r WHERE r.content_sha256 = u.content_sha256 AND r.represents_text)'
                   '  ORDER BY u.content_sha256, u.chunk_id)', target);
    GET DIAGNOSTICS marked = ROW_COUNT;
    RETURN marked;
END
$$;
CREATE OR REPLACE FUNCTION semindex.hand_over_texts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('UPDATE %1$s AS v SET represents_text = true WHERE v.chunk_id IN ('
                   '  SELECT DISTINCT ON (o.content_sha256) r.chunk_id'
                   '  FROM old_rows AS o JOIN %1$s AS r ON r.content_sha256 = o.content_sha256'
                   '  WHERE o.represents_text'
                   '    AND NOT EXISTS (SELECT 1 FROM %1$s AS k WHERE k.content_sha256 = o.content_sha256 AND k.represents_text)'
                   '  ORDER BY o.content_sha256, r.chunk_id)', TG_RELID::regclass);
    RETURN NULL;
END
$$;
-- The column, its marks and the hand-over trigger on a version's table, unless they are there (a
-- table made before this version of semindex: a one-time pass under a lock that keeps writers out).
CREATE OR REPLACE FUNCTION semindex.keep_text_representatives(target regclass) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = target AND tgname = 'semindex_hand_over_texts') THEN
        RETURN;
    END IF;
    EXECUTE format('LOCK TABLE %s IN SHARE ROW EXCLUSIVE MODE', target);
    EXECUTE format('ALTER TABLE %s ADD COLUMN IF NOT EXISTS represents_text boolean NOT NULL DEFAULT false', target);
    PERFORM semindex.represent_texts(target);
    EXECUTE format('CREATE OR REPLACE TRIGGER semindex_hand_over_texts AFTER DELETE ON %s REFERENCING OLD TABLE AS old_rows '
                   'FOR EACH STATEMENT EXECUTE FUNCTION semindex.hand_over_texts()', target);
END
$$;
