-- Evaluation against judged query sets.

-- name: judged_coverage
-- How many of a judged set's relevant records the version has vectors for, within the set's scope.
SELECT count(DISTINCT record_key) FROM {vectors}
WHERE connector_instance_id = ANY(%(instances)s)
  AND (cardinality(%(streams)s::text[]) = 0 OR stream = ANY(%(streams)s))
  AND (cardinality(%(fields)s::text[]) = 0 OR field = ANY(%(fields)s))
  AND record_key = ANY(%(record_keys)s);
