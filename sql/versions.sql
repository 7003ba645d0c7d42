-- The version lifecycle: stored verdicts, and the single flips that promote, roll back and retire.

-- name: lock_serving
-- Every flip takes this lock first, so two promotions (or a promotion and a rollback) never interleave.
SELECT pg_advisory_xact_lock(hashtext('semindex.serving'));

-- name: version_for_update
SELECT version_id, state, active, rollback_target, thresholds
FROM semindex.embedding_versions WHERE version_key = %s FOR UPDATE;

-- name: insert_evaluation
INSERT INTO semindex.version_evaluations (version_id, thresholds, judged, shadow, failures, passed)
VALUES (%(version_id)s, %(thresholds)s, %(judged)s, %(shadow)s, %(failures)s, %(passed)s)
RETURNING evaluation_id, version_id, evaluated_at, thresholds, judged, shadow, failures, passed;

-- name: latest_evaluation
-- FOR SHARE: a verdict read by a promotion cannot be deleted under it.
SELECT evaluation_id, version_id, evaluated_at, thresholds, judged, shadow, failures, passed
FROM semindex.version_evaluations WHERE version_id = %s
ORDER BY evaluation_id DESC LIMIT 1
FOR SHARE;

-- name: active_for_update
SELECT version_id, version_key FROM semindex.embedding_versions WHERE active FOR UPDATE;

-- name: rollback_target_for_update
SELECT version_id, version_key FROM semindex.embedding_versions WHERE rollback_target FOR UPDATE;

-- name: clear_rollback_target
UPDATE semindex.embedding_versions SET rollback_target = false WHERE rollback_target;

-- name: demote
-- The replaced version keeps its table and indexes: it stays queryable and is the rollback target.
UPDATE semindex.embedding_versions SET active = false, rollback_target = %(keep_as_target)s
WHERE version_id = %(version_id)s;

-- name: activate
UPDATE semindex.embedding_versions SET active = true, rollback_target = false WHERE version_id = %s;

-- name: record_event
INSERT INTO semindex.version_events (action, version_id, previous_version_id, evaluation_id)
VALUES (%s, %s, %s, %s);

-- name: retire
UPDATE semindex.embedding_versions SET state = 'retired', retired_at = now() WHERE version_id = %s;

-- name: drop_vectors
-- CASCADE takes the version's HNSW and partial indexes with its table.
DROP TABLE IF EXISTS {vectors} CASCADE;

-- name: forget_partial_indexes
DELETE FROM semindex.partial_hnsw_indexes WHERE version_id = %s;

-- name: forget_field_indexes
DELETE FROM semindex.field_hnsw_indexes WHERE version_id = %s;

-- name: forget_watermark
DELETE FROM semindex.embedding_backfill WHERE version_id = %s;

-- name: listing
SELECT v.version_key, v.encoder_name, v.dimensions, v.distance_metric AS metric, v.ann_engine, v.state, v.active,
       v.rollback_target, v.promotion, e.passed AS verdict, e.evaluated_at, e.failures,
       (SELECT watermark FROM semindex.embedding_backfill b WHERE b.version_id = v.version_id) AS watermark
FROM semindex.embedding_versions v
LEFT JOIN LATERAL (
    SELECT passed, evaluated_at, failures FROM semindex.version_evaluations e
    WHERE e.version_id = v.version_id ORDER BY evaluation_id DESC LIMIT 1
) e ON true
ORDER BY v.version_id;
