-- Facts about the server and the database in use, for `semindex db status` and `semindex db stop`.
-- name: version
SHOW server_version;

-- name: database_size
SELECT pg_database_size(current_database());

-- name: other_clients
-- Client sessions other than this one, in any database of the server (Dagster's, psql, other semindex
-- processes): stopping the server would end them.
SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid();
