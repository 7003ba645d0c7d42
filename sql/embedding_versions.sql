-- The embedding version registry (control plane).

-- name: register
INSERT INTO semindex.embedding_versions (version_key, encoder_name, encoder_revision, dimensions, distance_metric)
VALUES (%(version_key)s, %(encoder_name)s, %(encoder_revision)s, %(dimensions)s, %(distance_metric)s)
ON CONFLICT (version_key) DO NOTHING;

-- name: by_key
SELECT version_id, version_key, encoder_name, encoder_revision, dimensions, distance_metric, active, state
FROM semindex.embedding_versions WHERE version_key = %s;

-- name: active
SELECT version_id, version_key, encoder_name, encoder_revision, dimensions, distance_metric, active, state
FROM semindex.embedding_versions WHERE active;

-- name: all
SELECT version_id, version_key, encoder_name, encoder_revision, dimensions, distance_metric, active, state
FROM semindex.embedding_versions ORDER BY version_id;

-- name: set_state
UPDATE semindex.embedding_versions SET state = %s WHERE version_id = %s;

-- name: activate_if_none_active
-- The very first version serves as soon as its backfill is done; later versions go through promotion.
UPDATE semindex.embedding_versions SET active = true
WHERE version_id = %s AND NOT EXISTS (SELECT 1 FROM semindex.embedding_versions WHERE active);
