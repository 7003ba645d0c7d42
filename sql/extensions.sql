-- Extensions semindex needs. Each is created on its own so the caller can tell which one failed.
-- name: create_vector
CREATE EXTENSION IF NOT EXISTS vector;

-- name: create_btree_gin
CREATE EXTENSION IF NOT EXISTS btree_gin;

-- name: create_pg_trgm
CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- name: installed
SELECT extname, extversion FROM pg_extension WHERE extname IN ('vector', 'btree_gin', 'pg_trgm');
