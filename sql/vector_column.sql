-- The vector column of a version's table: its declared type and planner statistics.

-- name: analyze
ANALYZE {vectors};
