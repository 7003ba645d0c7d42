-- Row counts kept by the writes (semindex.row_counts; the triggers and tables are in schema.sql).

-- name: count_relation
SELECT semindex.count_relation(%(table)s::regclass, %(shape)s, %(version_id)s);

-- name: fold
-- The deltas appended since the last fold, added into source_rows. One statement: a concurrent fold
-- waits on the rows this one deletes, then finds them gone, so nothing is added twice; rows appended
-- meanwhile are not visible to it and stay for the next fold.
WITH folded AS (
    DELETE FROM semindex.source_row_deltas RETURNING relation, connector_instance_id, stream, rows, bytes, touched
), sums AS (
    SELECT relation, connector_instance_id, stream, sum(rows) AS rows, sum(bytes) AS bytes, sum(touched) AS touched
    FROM folded GROUP BY relation, connector_instance_id, stream
)
INSERT INTO semindex.source_rows AS s (relation, connector_instance_id, stream, rows, bytes, touched)
SELECT relation, connector_instance_id, stream, rows, bytes, touched FROM sums
ORDER BY relation, connector_instance_id, stream
ON CONFLICT (relation, connector_instance_id, stream)
DO UPDATE SET rows = s.rows + excluded.rows, bytes = s.bytes + excluded.bytes, touched = s.touched + excluded.touched;

-- name: rows
-- Folded rows plus the deltas not folded yet, in one snapshot: exact as of this statement. Cost: the
-- relation's sources, never its rows.
SELECT EXISTS (SELECT 1 FROM semindex.counted_relations WHERE relation = %(relation)s) AS counted,
       ((SELECT coalesce(sum(rows), 0) FROM semindex.source_rows WHERE relation = %(relation)s)
      + (SELECT coalesce(sum(rows), 0) FROM semindex.source_row_deltas WHERE relation = %(relation)s))::bigint AS rows,
       ((SELECT coalesce(sum(touched), 0) FROM semindex.source_rows WHERE relation = %(relation)s)
      + (SELECT coalesce(sum(touched), 0) FROM semindex.source_row_deltas WHERE relation = %(relation)s))::bigint AS touched;

-- name: source_totals
-- Per source of the given ones: the rows and bytes of each relation asked for (folded plus not yet).
WITH sources AS (
    SELECT * FROM unnest(%(instances)s::text[], %(streams)s::text[]) AS s(connector_instance_id, stream)
), kept AS (
    SELECT relation, connector_instance_id, stream, rows, bytes FROM semindex.source_rows
    WHERE relation = ANY(%(relations)s::text[])
    UNION ALL
    SELECT relation, connector_instance_id, stream, rows, bytes FROM semindex.source_row_deltas
    WHERE relation = ANY(%(relations)s::text[])
)
SELECT k.relation, k.connector_instance_id, k.stream, sum(k.rows)::bigint AS rows, sum(k.bytes)::bigint AS bytes
FROM kept AS k JOIN sources USING (connector_instance_id, stream)
GROUP BY k.relation, k.connector_instance_id, k.stream;
