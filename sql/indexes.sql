-- Index management: advisory locks, validity, and serial builds with raised maintenance memory.
-- {concurrently} is either empty or CONCURRENTLY.

-- name: lock
SELECT pg_advisory_lock(hashtext('semindex.index:' || %s));

-- name: try_lock
SELECT pg_try_advisory_lock(hashtext('semindex.index:' || %s));

-- name: unlock
SELECT pg_advisory_unlock(hashtext('semindex.index:' || %s));

-- name: session_settings
SELECT set_config('client_connection_check_interval', '1s', false);

-- name: validity
-- (index name, valid) for the named indexes of a schema that exist.
SELECT c.relname, i.indisvalid AND i.indisready
FROM pg_index AS i
JOIN pg_class AS c ON c.oid = i.indexrelid
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname = ANY(%s);

-- name: drop
DROP INDEX {concurrently} IF EXISTS {index};

-- name: raise_build_memory
-- A build's memory and its parallel workers (semindex.build_parallelism probes how many /dev/shm
-- allows: 0 = serial). For a CONCURRENTLY build (no transaction block): the session's settings,
-- reset after.
SELECT set_config('maintenance_work_mem', %s, false), set_config('max_parallel_maintenance_workers', %s, false);

-- name: raise_build_memory_local
-- The same for a build inside a transaction: both revert at commit or rollback.
SELECT set_config('maintenance_work_mem', %s, true), set_config('max_parallel_maintenance_workers', %s, true);

-- name: parallel_build_settings
-- What the parallelism probe needs from the server: is it on this host (a unix socket or loopback:
-- its /dev/shm is ours), how it shares memory between processes, how many maintenance workers it allows.
SELECT inet_server_addr() IS NULL OR host(inet_server_addr()) IN ('127.0.0.1', '::1') AS local,
       current_setting('dynamic_shared_memory_type') AS shm_type,
       current_setting('max_parallel_maintenance_workers')::int AS max_workers;

-- name: reset_build_memory
RESET maintenance_work_mem;
RESET max_parallel_maintenance_workers;

-- name: create_hnsw
-- One graph element per distinct text (sql/schema.sql: represent_texts says why).
CREATE INDEX {concurrently} IF NOT EXISTS {index} ON {vectors}
USING hnsw (embedding {opclass}) WITH (m = {m}, ef_construction = {ef_construction})
WHERE represents_text;

-- name: create_partial_hnsw
CREATE INDEX {concurrently} IF NOT EXISTS {index} ON {vectors}
USING hnsw (embedding {opclass}) WITH (m = {m}, ef_construction = {ef_construction})
WHERE connector_instance_id = {connector_instance_id} AND stream = {stream};

-- name: create_field_hnsw
CREATE INDEX {concurrently} IF NOT EXISTS {index} ON {vectors}
USING hnsw (embedding {opclass}) WITH (m = {m}, ef_construction = {ef_construction})
WHERE field = {field};

-- name: create_record_key_btree
-- A scope of record keys alone reads a table's rows (a version's vectors, the lexical documents)
-- through this index: through the scope index, whose leading columns the keys do not give, each key
-- costs a skip over every source (1,000 keys at 1M rows: 7-9 ms of index searches against 3-5 ms).
CREATE INDEX {concurrently} IF NOT EXISTS {index} ON {table} (record_key);

-- name: create_lexical_gin
-- Every lexical query filters by connector instance and stream: one scope-shaped GIN (btree_gin)
-- over the lexical documents answers the scope and the text match together.
CREATE INDEX {concurrently} IF NOT EXISTS {index} ON semindex.lexical_documents
USING gin (connector_instance_id, stream, document);

-- name: definition
SELECT pg_get_indexdef(to_regclass(%s));
