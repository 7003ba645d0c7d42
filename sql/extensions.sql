-- Extensions semindex needs. Each is created on its own so the caller can tell which one failed.
-- btree_gin and pg_trgm are trusted (a database owner may create them); pgvector is not, so a role
-- without superuser rights gets it only when an administrator installed it: without it semindex
-- keeps working in JSONB mode (see semindex.database.Database.vector_mode).
-- name: create_vector
CREATE EXTENSION IF NOT EXISTS vector;

-- name: create_btree_gin
CREATE EXTENSION IF NOT EXISTS btree_gin;

-- name: create_pg_trgm
CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- name: installed
SELECT extname, extversion FROM pg_extension WHERE extname IN ('vector', 'btree_gin', 'pg_trgm');

-- name: vector_installed
-- The installed pgvector version, or no row: decides between vector and JSONB storage.
SELECT extversion FROM pg_extension WHERE extname = 'vector';
