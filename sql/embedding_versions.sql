-- The embedding version registry (control plane).

-- name: register
INSERT INTO semindex.embedding_versions
    (version_key, encoder_name, encoder_revision, dimensions, distance_metric, chunking, thresholds, promotion,
     ann_engine)
VALUES (%(version_key)s, %(encoder_name)s, %(encoder_revision)s, %(dimensions)s, %(distance_metric)s,
        %(chunking)s, %(thresholds)s, %(promotion)s, %(ann_engine)s)
ON CONFLICT (version_key) DO NOTHING;

-- name: update_evaluation_settings
-- Thresholds and the promotion mode are evaluation policy, not the encoder's identity: they may change
-- on a registered version. Verdicts judged under other thresholds stop counting (see versions.sql).
UPDATE semindex.embedding_versions SET thresholds = %(thresholds)s, promotion = %(promotion)s
WHERE version_key = %(version_key)s AND (thresholds, promotion) IS DISTINCT FROM (%(thresholds)s::jsonb, %(promotion)s);

-- name: by_key
SELECT version_id, version_key, encoder_name, encoder_revision, dimensions, distance_metric, active, state,
       chunking, thresholds, promotion, rollback_target, ann_engine
FROM semindex.embedding_versions WHERE version_key = %s;

-- name: active
SELECT version_id, version_key, encoder_name, encoder_revision, dimensions, distance_metric, active, state,
       chunking, thresholds, promotion, rollback_target, ann_engine
FROM semindex.embedding_versions WHERE active;

-- name: all
SELECT version_id, version_key, encoder_name, encoder_revision, dimensions, distance_metric, active, state,
       chunking, thresholds, promotion, rollback_target, ann_engine
FROM semindex.embedding_versions ORDER BY version_id;

-- name: set_state
-- A retired version stays retired: a straggling backfill run must not bring it back.
UPDATE semindex.embedding_versions SET state = %s WHERE version_id = %s AND state <> 'retired';
