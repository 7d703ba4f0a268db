-- pgcast schema version 3 as `pgcast track` installed it (generated from
-- src/pgcast/capture/sql.py at the last version-3 commit): the upgrade test's
-- starting point. The triggers of a table tracked under version 3 are
-- CREATE TRIGGER ... FOR EACH STATEMENT EXECUTE FUNCTION "pgcast".capture().

CREATE SCHEMA IF NOT EXISTS "pgcast";

CREATE TABLE IF NOT EXISTS "pgcast".changes (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    txid xid8 NOT NULL,
    tx_xmin xid8 NOT NULL,
    committed_at timestamptz NOT NULL,
    schema_name text NOT NULL,
    table_name text NOT NULL,
    op text NOT NULL,
    record jsonb,
    old_record jsonb,
    changed text[]
);
CREATE INDEX IF NOT EXISTS changes_txid_idx ON "pgcast".changes (txid);

CREATE TABLE IF NOT EXISTS "pgcast".tracked (
    relid regclass PRIMARY KEY,
    columns text[],
    when_changed text[],
    skip_unchanged boolean NOT NULL DEFAULT true,
    tracked_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS "pgcast".state (
    key text PRIMARY KEY,
    value text NOT NULL
);

-- CACHE 1: a per-session cache would hand the armed value to one session only.
CREATE SEQUENCE IF NOT EXISTS "pgcast"."wake"
    AS bigint START WITH 1048576 CACHE 1;

CREATE OR REPLACE FUNCTION "pgcast".changed_columns(new jsonb, old jsonb)
RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    -- jsonb_object_keys + "->" is about a third cheaper than jsonb_each, which
    -- builds a tuplestore per call.
    SELECT ARRAY(SELECT k FROM jsonb_object_keys(new) AS k
                  WHERE new -> k IS DISTINCT FROM old -> k)
$$;
COMMENT ON FUNCTION "pgcast".changed_columns(jsonb, jsonb) IS
    'pgcast: keys of new whose value differs from (or is missing in) old, in jsonb key order.';

CREATE OR REPLACE FUNCTION "pgcast".capture()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
SET work_mem = '64MB'
AS $fn$
#variable_conflict use_variable
DECLARE
    v_txid     xid8        := pg_current_xact_id();
    v_xmin     xid8        := pg_snapshot_xmin(pg_current_snapshot());
    v_at       timestamptz := clock_timestamp();
    v_columns  text[];
    v_when     text[];
    v_skip     boolean     := true;
    v_drop     text[]      := '{}';
    v_rows     bigint      := 0;
BEGIN
    SELECT t.columns, t.when_changed, t.skip_unchanged
      INTO v_columns, v_when, v_skip
      FROM "pgcast".tracked AS t
     WHERE t.relid = TG_RELID;
    -- No options row (deleted by hand): capture everything rather than lose writes.
    v_skip := coalesce(v_skip, true);

    IF v_columns IS NOT NULL AND TG_OP <> 'TRUNCATE' THEN
        -- Read the column list now, not at track time, so columns added later
        -- are projected away too.
        SELECT coalesce(array_agg(a.attname::text), '{}')
          INTO v_drop
          FROM pg_attribute AS a
         WHERE a.attrelid = TG_RELID AND a.attnum > 0 AND NOT a.attisdropped
           AND a.attname::text <> ALL (v_columns);
    END IF;

    IF TG_OP = 'INSERT' THEN
        INSERT INTO "pgcast".changes
               (txid, tx_xmin, committed_at, schema_name, table_name, op, record)
        SELECT v_txid, v_xmin, v_at, TG_TABLE_SCHEMA, TG_TABLE_NAME, 'INSERT',
               to_jsonb(r.*) - v_drop
          FROM pgcast_new AS r;
        GET DIAGNOSTICS v_rows = ROW_COUNT;

    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO "pgcast".changes
               (txid, tx_xmin, committed_at, schema_name, table_name, op,
                record, old_record, changed)
        SELECT v_txid, v_xmin, v_at, TG_TABLE_SCHEMA, TG_TABLE_NAME, 'UPDATE',
               n.record, o.old_record, c.changed
          FROM (SELECT row_number() OVER () AS ord, to_jsonb(r.*) - v_drop AS record
                  FROM pgcast_new AS r) AS n
          JOIN (SELECT row_number() OVER () AS ord, to_jsonb(r.*) - v_drop AS old_record
                  FROM pgcast_old AS r) AS o
            ON o.ord = n.ord
         CROSS JOIN LATERAL (
               -- The body of changed_columns(), inlined: PostgreSQL cannot inline a
               -- SQL function containing a sub-select, and calling it per row costs
               -- ~40% more. OFFSET 0 stops the planner from pulling the sub-select
               -- up, which would evaluate it once per mention of c.changed.
               SELECT ARRAY(SELECT k FROM jsonb_object_keys(n.record) AS k
                             WHERE n.record -> k IS DISTINCT FROM o.old_record -> k)
                      AS changed
               OFFSET 0) AS c
         WHERE (NOT v_skip OR cardinality(c.changed) > 0)
           AND (v_when IS NULL OR c.changed && v_when)
         ORDER BY n.ord;
        GET DIAGNOSTICS v_rows = ROW_COUNT;

    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO "pgcast".changes
               (txid, tx_xmin, committed_at, schema_name, table_name, op, old_record)
        SELECT v_txid, v_xmin, v_at, TG_TABLE_SCHEMA, TG_TABLE_NAME, 'DELETE',
               to_jsonb(r.*) - v_drop
          FROM pgcast_old AS r;
        GET DIAGNOSTICS v_rows = ROW_COUNT;

    ELSIF TG_OP = 'TRUNCATE' THEN
        INSERT INTO "pgcast".changes
               (txid, tx_xmin, committed_at, schema_name, table_name, op)
        VALUES (v_txid, v_xmin, v_at, TG_TABLE_SCHEMA, TG_TABLE_NAME, 'TRUNCATE');
        v_rows := 1;
    END IF;

    -- NULL last value: not called since the gateway's setval, i.e. armed.
    IF v_rows > 0
       AND pg_sequence_last_value('"pgcast"."wake"') IS NULL THEN
        IF pg_notification_queue_usage() < 0.5 THEN
            IF nextval('"pgcast"."wake"') % 1048576 = 0 THEN
                PERFORM pg_notify('pgcast', '');
            END IF;
        END IF;
    END IF;
    RETURN NULL;
END
$fn$;
COMMENT ON FUNCTION "pgcast".capture() IS
    'pgcast: statement-level capture of tracked tables into pgcast.changes.';

INSERT INTO "pgcast".state (key, value) VALUES ('schema_version', '3');
