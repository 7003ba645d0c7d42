-- Live shadow traffic (semindex.shadow_traffic).

-- name: candidates
-- Versions a live query is mirrored to: built (ready), not serving.
SELECT version_key FROM semindex.embedding_versions WHERE state = 'ready' AND NOT active ORDER BY version_id;

-- name: insert_observations
INSERT INTO semindex.shadow_observations (version_id, serving_version_id, mode, query_sha256, overlap_at_10, rbo_at_10)
SELECT v.version_id, s.version_id, o.mode, o.query_sha256, o.overlap, o.rbo
FROM unnest(%(versions)s::text[], %(serving)s::text[], %(modes)s::text[], %(hashes)s::bytea[],
            %(overlaps)s::float8[], %(rbos)s::float8[])
     AS o(version_key, serving_key, mode, query_sha256, overlap, rbo)
JOIN semindex.embedding_versions v ON v.version_key = o.version_key
JOIN semindex.embedding_versions s ON s.version_key = o.serving_key;

-- name: live_traffic
-- A version's observations against the version serving now, by mode.
SELECT o.mode, count(*) AS queries, avg(o.overlap_at_10) AS overlap_at_10, avg(o.rbo_at_10) AS rbo_at_10,
       min(o.observed_at) AS since, max(o.observed_at) AS until
FROM semindex.shadow_observations o
JOIN semindex.embedding_versions v ON v.version_id = o.version_id
JOIN semindex.embedding_versions s ON s.version_id = o.serving_version_id AND s.active
WHERE v.version_key = %(version_key)s
GROUP BY o.mode ORDER BY o.mode;
