-- The per-row NOTIFY trigger teams hand-write; pairs with gateway.py.
--
--   psql "$DSN" -v table=orders -f bench/baseline/trigger.sql
--
-- Every INSERT/UPDATE sends row_to_json(NEW), every DELETE row_to_json(OLD), on channel
-- 'table_changes'. Notifications are delivered at commit; a payload over 8000 bytes makes
-- the writing statement fail ("payload string too long").

\if :{?table}
\else
\set table orders
\endif

CREATE OR REPLACE FUNCTION notify_table_changes() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('table_changes', row_to_json(OLD)::text);
    ELSE
        PERFORM pg_notify('table_changes', row_to_json(NEW)::text);
    END IF;
    RETURN NULL;  -- AFTER trigger: the return value is ignored
END;
$$;

DROP TRIGGER IF EXISTS table_changes_notify ON :"table";
CREATE TRIGGER table_changes_notify
    AFTER INSERT OR UPDATE OR DELETE ON :"table"
    FOR EACH ROW EXECUTE FUNCTION notify_table_changes();
