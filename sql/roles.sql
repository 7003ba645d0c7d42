-- Database roles: a writer that runs the pipeline and owns everything in the semindex schema, and a
-- reader that only searches. An administrator runs these once, after CREATE EXTENSION vector and
-- btree_gin (pgvector is not a trusted extension, so only a superuser can create it). {writer},
-- {reader} and {database} are identifiers, {password} a literal.

-- name: create_writer
CREATE ROLE {writer} LOGIN PASSWORD {password};

-- name: create_reader
CREATE ROLE {reader} LOGIN PASSWORD {password};

-- name: revoke_public
-- Optional hardening: nothing for roles that were not granted it here.
REVOKE ALL ON DATABASE {database} FROM PUBLIC;
REVOKE ALL ON SCHEMA public FROM PUBLIC;

-- name: grant_writer
-- CONNECT to log in; TEMPORARY for the staging tables every batch COPYs into; CREATE because the
-- bootstrap's CREATE SCHEMA IF NOT EXISTS checks it even when the schema exists.
GRANT CONNECT, TEMPORARY, CREATE ON DATABASE {database} TO {writer};
-- The writer owns the schema, so it owns every table and index it creates, including the ones
-- created at run time (a vector table per embedding version, HNSW and partial indexes, which it
-- must also be able to drop and rebuild).
CREATE SCHEMA IF NOT EXISTS semindex AUTHORIZATION {writer};
ALTER SCHEMA semindex OWNER TO {writer};
-- pgvector's type and operators live where CREATE EXTENSION put them (public); Dagster's run and
-- event storage (semindex run / dev) creates its tables there too.
GRANT USAGE, CREATE ON SCHEMA public TO {writer};

-- name: grant_reader
-- CONNECT to log in, USAGE to see into the schema, SELECT on the tables that exist now.
GRANT CONNECT ON DATABASE {database} TO {reader};
GRANT USAGE ON SCHEMA semindex TO {reader};
GRANT SELECT ON ALL TABLES IN SCHEMA semindex TO {reader};
-- SELECT on every table the writer creates later: the schema's tables at its first bootstrap and
-- each new embedding version's vector table.
ALTER DEFAULT PRIVILEGES FOR ROLE {writer} IN SCHEMA semindex GRANT SELECT ON TABLES TO {reader};
-- The vector type and its distance operators.
GRANT USAGE ON SCHEMA public TO {reader};

-- name: hand_over_tables
-- A database bootstrapped by another role (say a superuser): every semindex table, function and
-- aggregate goes to the writer named by the session setting semindex.writer (SET semindex.writer =
-- '<role>'), so the body stays a constant; indexes and identity sequences follow their tables. The
-- writer's bootstrap replaces the functions (CREATE OR REPLACE), which only their owner may do.
DO $$
DECLARE
    owned regclass;
    routine record;
BEGIN
    FOR owned IN
        SELECT c.oid::regclass FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.nspname = 'semindex' AND c.relkind IN ('r', 'p')
    LOOP
        EXECUTE format('ALTER TABLE %s OWNER TO %I', owned, current_setting('semindex.writer'));
    END LOOP;
    FOR routine IN
        SELECT p.oid::regprocedure AS signature, p.prokind = 'a' AS aggregate
        FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
        WHERE n.nspname = 'semindex'
    LOOP
        EXECUTE format('ALTER %s %s OWNER TO %I', CASE WHEN routine.aggregate THEN 'AGGREGATE' ELSE 'ROUTINE' END,
                       routine.signature, current_setting('semindex.writer'));
    END LOOP;
END
$$;
