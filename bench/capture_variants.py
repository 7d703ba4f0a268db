"""Where a tracked writer's time goes: pgbench on capture-trigger variants, interleaved.

    python bench/capture_variants.py --clients 16,64 --ops insert,update --seconds 4 --rounds 2

One scratch database, one ``orders``-shaped table per variant, no gateway (this
measures the writer's transaction only). Variants are cut-down copies of the capture
trigger, each removing one suspect, so the differences between ratios say what each
suspect costs. Prints TPS and the ratio to ``untracked`` per cell (median of rounds).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DEFAULT_DSN, loadavg, scratch_database
from writers import _DDL, ROWS, SCRIPTS, pgbench

from pgcast.capture.installer import track
from pgcast.identifiers import parse_table_name

# name -> SQL run after the table {t} exists (pgcast installed). "trigger" is track()
# (today's generated per-table function); "v3_generic" and the "no_*" variants are the
# generic function of schema version 3 and cut-down copies of it.
VARIANTS: dict[str, str] = {
    "untracked": "",
    "trigger": "",
    # A statement trigger with transition tables that does nothing.
    "noop": """
CREATE FUNCTION {t}_f() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
CREATE TRIGGER a AFTER INSERT ON {t} REFERENCING NEW TABLE AS n FOR EACH STATEMENT
    EXECUTE FUNCTION {t}_f();
CREATE TRIGGER b AFTER UPDATE ON {t} REFERENCING OLD TABLE AS o NEW TABLE AS n
    FOR EACH STATEMENT EXECUTE FUNCTION {t}_f();
""",
    # The same, inserting one constant log row (no jsonb, no options lookup).
    "const_row": """
CREATE FUNCTION {t}_f() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
    INSERT INTO pgcast.changes (txid, tx_xmin, committed_at, schema_name, table_name, op)
    VALUES (pg_current_xact_id(), pg_current_xact_id(), clock_timestamp(), 's', 't', 'X');
    RETURN NULL; END $$;
CREATE TRIGGER a AFTER INSERT ON {t} REFERENCING NEW TABLE AS n FOR EACH STATEMENT
    EXECUTE FUNCTION {t}_f();
CREATE TRIGGER b AFTER UPDATE ON {t} REFERENCING OLD TABLE AS o NEW TABLE AS n
    FOR EACH STATEMENT EXECUTE FUNCTION {t}_f();
""",
    # Per-table, no options lookup, no SET clauses, no SECURITY DEFINER: the log rows
    # exactly as today's (to_jsonb of the row; UPDATE with old row and changed).
    "plain": """
CREATE FUNCTION {t}_i() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
    INSERT INTO pgcast.changes (txid, tx_xmin, committed_at, schema_name, table_name, op, record)
    SELECT pg_current_xact_id(), pg_snapshot_xmin(pg_current_snapshot()), clock_timestamp(),
           'public', '{t}', 'INSERT', to_jsonb(r.*) FROM n AS r;
    RETURN NULL; END $$;
CREATE FUNCTION {t}_u() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
    INSERT INTO pgcast.changes (txid, tx_xmin, committed_at, schema_name, table_name, op,
                                record, old_record, changed)
    SELECT pg_current_xact_id(), pg_snapshot_xmin(pg_current_snapshot()), clock_timestamp(),
           'public', '{t}', 'UPDATE', x.record, x.old_record, x.changed FROM (
      SELECT nn.record, oo.old_record,
             ARRAY(SELECT k FROM jsonb_object_keys(nn.record) AS k
                    WHERE nn.record -> k IS DISTINCT FROM oo.old_record -> k) AS changed
        FROM (SELECT row_number() OVER () AS ord, to_jsonb(r.*) AS record FROM n AS r) nn
        JOIN (SELECT row_number() OVER () AS ord, to_jsonb(r.*) AS old_record FROM o AS r) oo
          ON oo.ord = nn.ord) x
     WHERE cardinality(x.changed) > 0;
    RETURN NULL; END $$;
CREATE TRIGGER a AFTER INSERT ON {t} REFERENCING NEW TABLE AS n FOR EACH STATEMENT
    EXECUTE FUNCTION {t}_i();
CREATE TRIGGER b AFTER UPDATE ON {t} REFERENCING OLD TABLE AS o NEW TABLE AS n
    FOR EACH STATEMENT EXECUTE FUNCTION {t}_u();
""",
    # Per-row trigger, same log rows (no transition tables).
    "row": """
CREATE FUNCTION {t}_f() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE n jsonb; o jsonb; BEGIN
    n := to_jsonb(NEW);
    IF TG_OP = 'INSERT' THEN
      INSERT INTO pgcast.changes (txid, tx_xmin, committed_at, schema_name, table_name, op, record)
      VALUES (pg_current_xact_id(), pg_snapshot_xmin(pg_current_snapshot()), clock_timestamp(),
              'public', '{t}', 'INSERT', n);
    ELSE
      o := to_jsonb(OLD);
      INSERT INTO pgcast.changes (txid, tx_xmin, committed_at, schema_name, table_name, op,
                                  record, old_record, changed)
      VALUES (pg_current_xact_id(), pg_snapshot_xmin(pg_current_snapshot()), clock_timestamp(),
              'public', '{t}', 'UPDATE', n, o,
              ARRAY(SELECT k FROM jsonb_object_keys(n) AS k WHERE n -> k IS DISTINCT FROM o -> k));
    END IF;
    RETURN NULL; END $$;
CREATE TRIGGER a AFTER INSERT OR UPDATE ON {t} FOR EACH ROW EXECUTE FUNCTION {t}_f();
""",
}


async def prepare(dsn: str, names: list[str]) -> dict[str, str]:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TABLE bootstrap (id int PRIMARY KEY)")
        await track(conn, parse_table_name("bootstrap"))  # installs pgcast
        for name in names:
            table = f"v_{name}"
            await conn.execute(_DDL.format(t=table, rows=ROWS))
            if name == "trigger":
                await track(conn, parse_table_name(table))
            elif name in GEN_EDITS:
                await generated_variant(conn, table, name)
            elif VARIANTS[name]:
                await conn.execute(VARIANTS[name].format(t=table))
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()
    return {name: f"v_{name}" for name in names}


MICRO = {
    "insert": "INSERT INTO {t} (customer_id, status, amount, note) "
    "VALUES (i, 'pending', 12.5, 'one row')",
    "update": "UPDATE {t} SET amount = amount + 1 WHERE id = 1 + (i * 7919) % 100000",
}


async def micro(
    dsn: str, tables: dict[str, str], ops: list[str], statements: int, rounds: int
) -> None:
    """Per-statement cost in one session: a DO loop of one-row statements (one transaction,
    so no commit), interleaved variants, minimum of rounds (robust to other load)."""
    conn = await asyncpg.connect(dsn)
    pid = await conn.fetchval("SELECT pg_backend_pid()")

    def cpu() -> float:  # the backend's user+system CPU seconds (same machine)
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    try:
        for op in ops:
            times: dict[str, list[float]] = {}
            for r in range(rounds):
                names = list(tables)
                for name in names[r % len(names) :] + names[: r % len(names)]:
                    body = MICRO[op].format(t=tables[name])
                    started = cpu()
                    await conn.execute(
                        f"DO $$ BEGIN FOR i IN 1..{statements} LOOP {body}; END LOOP; END $$"
                    )
                    times.setdefault(name, []).append((cpu() - started) / statements * 1e6)
            print(
                f"\nper-statement {op.upper()} (backend CPU, min of {rounds}, µs; load {loadavg()})"
            )
            base = min(times["untracked"])
            for name, values in times.items():
                print(
                    f"  {name:12s} {min(values):7.1f} µs  +{min(values) - base:6.1f}  "
                    f"median {statistics.median(values):7.1f}",
                    flush=True,
                )
    finally:
        await conn.close()


async def main_async(args: argparse.Namespace) -> None:
    names = args.variants.split(",")
    print(f"load average at start: {loadavg()}", flush=True)
    async with scratch_database(args.dsn) as dsn:
        tables = await prepare(dsn, names)
        if args.micro:
            await micro(dsn, tables, args.ops.split(","), args.micro, args.rounds)
            return
        with tempfile.TemporaryDirectory() as tmp:
            for clients in [int(c) for c in args.clients.split(",")]:
                for op in args.ops.split(","):
                    runs: dict[str, list[float]] = {}
                    for r in range(args.rounds):
                        order = names[r % len(names) :] + names[: r % len(names)]
                        for name in order:
                            script = Path(tmp) / f"{op}_{name}.sql"
                            script.write_text(SCRIPTS[op].format(t=tables[name]))
                            run = await pgbench(dsn, script, clients, args.seconds)
                            runs.setdefault(name, []).append(run["tps"])
                    base = statistics.median(runs["untracked"])
                    print(f"\n{clients} clients {op.upper()}  (load {loadavg()})")
                    for name in names:
                        tps = statistics.median(runs[name])
                        spread = "/".join(f"{v:.0f}" for v in runs[name])
                        print(
                            f"  {name:12s} {tps:8.0f}  {tps / base:5.2f}x  ({spread})", flush=True
                        )
    print(f"load average at end: {loadavg()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--clients", default="16,64")
    parser.add_argument("--ops", default="insert,update")
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--micro", type=int, default=0, help="statements per DO loop")
    asyncio.run(main_async(parser.parse_args()))


def _capture_copy(name: str, edit: dict[str, str]) -> str:
    """Version 3's generic pgcast.capture() (from the upgrade test's fixture) renamed to
    pgcast.<name>() with text edits, and its triggers on {t}."""
    from pgcast.capture.sql import TRIGGERS

    script = (Path(__file__).resolve().parents[1] / "tests/integration/schema_v3.sql").read_text()
    start = script.index('CREATE OR REPLACE FUNCTION "pgcast".capture()')
    end = script.index('COMMENT ON FUNCTION "pgcast".capture()')
    function = script[start:end].replace('"pgcast".capture()', f"pgcast.{name}()")
    for old, new in edit.items():
        if old not in function:
            raise SystemExit(f"{old!r} not in capture()")
        function = function.replace(old, new)
    triggers = "".join(
        f"CREATE TRIGGER {trigger} AFTER {event} ON {{t}} {referencing} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION pgcast.{name}();\n"
        for trigger, event, referencing in TRIGGERS
    )
    return function.replace("{", "{{").replace("}", "}}") + ";\n" + triggers


_LOOKUP = "WHERE t.relid = TG_RELID;"
VARIANTS.update(
    {
        "v3_generic": _capture_copy("c_v3", {}),
        "no_definer": _capture_copy("c_nodef", {"SECURITY DEFINER\n": ""}),
        "no_jit_wm": _capture_copy(
            "c_nojit", {"SET jit = off\n": "", "SET work_mem = '64MB'\n": ""}
        ),
        "no_sets": _capture_copy(
            "c_nosets",
            {
                "SECURITY DEFINER\n": "",
                "SET search_path = pg_catalog, pg_temp\n": "",
                "SET jit = off\n": "",
                "SET work_mem = '64MB'\n": "",
            },
        ),
        "no_lookup": _capture_copy("c_nolookup", {_LOOKUP: "WHERE false;"}),
    }
)


_ZIP_UPDATE = """
CREATE FUNCTION {t}_i() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
    INSERT INTO pgcast.changes (txid, tx_xmin, committed_at, schema_name, table_name, op, record)
    SELECT pg_current_xact_id(), pg_snapshot_xmin(pg_current_snapshot()), clock_timestamp(),
           'public', '{t}', 'INSERT', to_jsonb(r.*) FROM n AS r;
    RETURN NULL; END $$;
CREATE FUNCTION {t}_u() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
    INSERT INTO pgcast.changes (txid, tx_xmin, committed_at, schema_name, table_name, op,
                                record, old_record, changed)
    SELECT pg_current_xact_id(), pg_snapshot_xmin(pg_current_snapshot()), clock_timestamp(),
           'public', '{t}', 'UPDATE', z.record, z.old_record, c.changed
      FROM unnest(ARRAY(SELECT to_jsonb(r.*) FROM n AS r),
                  ARRAY(SELECT to_jsonb(r.*) FROM o AS r)) AS z(record, old_record)
     CROSS JOIN LATERAL (
           SELECT ARRAY(SELECT k FROM jsonb_object_keys(z.record) AS k
                         WHERE z.record -> k IS DISTINCT FROM z.old_record -> k) AS changed
           OFFSET 0) AS c
     WHERE cardinality(c.changed) > 0;
    RETURN NULL; END $$;
CREATE TRIGGER a AFTER INSERT ON {t} REFERENCING NEW TABLE AS n FOR EACH STATEMENT
    EXECUTE FUNCTION {t}_i();
CREATE TRIGGER b AFTER UPDATE ON {t} REFERENCING OLD TABLE AS o NEW TABLE AS n
    FOR EACH STATEMENT EXECUTE FUNCTION {t}_u();
"""
VARIANTS["zip"] = _ZIP_UPDATE
VARIANTS["plain_definer"] = VARIANTS["plain"].replace(
    "LANGUAGE plpgsql AS",
    "LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS",
)
VARIANTS["plain_def_jit"] = VARIANTS["plain"].replace(
    "LANGUAGE plpgsql AS",
    "LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET jit = off AS",
)


_GUARDED_UPDATE = """
CREATE FUNCTION {t}_u() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET jit = off SET work_mem = '64MB' AS $$
DECLARE v_txid xid8 := pg_current_xact_id();
    v_xmin xid8 := pg_snapshot_xmin(pg_current_snapshot()); v_at timestamptz := clock_timestamp();
BEGIN
  IF @GUARD@ THEN
    INSERT INTO pgcast.changes (txid, tx_xmin, committed_at, schema_name, table_name, op,
                                record, old_record, changed)
    SELECT v_txid, v_xmin, v_at, TG_TABLE_SCHEMA, TG_TABLE_NAME, 'UPDATE',
           x.record, x.old_record, c.changed
      FROM (SELECT to_jsonb(n.*) AS record, to_jsonb(o.*) AS old_record
              FROM n AS n CROSS JOIN o AS o) AS x
     CROSS JOIN LATERAL (
           SELECT ARRAY(SELECT k FROM jsonb_object_keys(x.record) AS k
                         WHERE x.record -> k IS DISTINCT FROM x.old_record -> k) AS changed
           OFFSET 0) AS c
     WHERE cardinality(c.changed) > 0;
  END IF;
  RETURN NULL; END $$;
CREATE TRIGGER b AFTER UPDATE ON {t} REFERENCING OLD TABLE AS o NEW TABLE AS n
    FOR EACH STATEMENT EXECUTE FUNCTION {t}_u();
"""
VARIANTS["upd_single"] = _GUARDED_UPDATE.replace("@GUARD@", "true")
VARIANTS["upd_guard"] = _GUARDED_UPDATE.replace("@GUARD@", "NOT EXISTS (SELECT FROM n OFFSET 1)")

VARIANTS["upd_nosets"] = VARIANTS["upd_single"].replace(
    "SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET jit = off SET work_mem = '64MB' ",
    "",
)
VARIANTS["upd_nochanged"] = VARIANTS["upd_nosets"].replace(
    "ARRAY(SELECT k FROM jsonb_object_keys(x.record) AS k\n"
    "                         WHERE x.record -> k IS DISTINCT FROM x.old_record -> k)",
    "ARRAY['amount']",
)
VARIANTS["upd_nojsonb"] = VARIANTS["upd_nochanged"].replace(
    "to_jsonb(n.*) AS record, to_jsonb(o.*) AS old_record",
    "'{{}}'::jsonb AS record, '{{}}'::jsonb AS old_record",
)

_CHANGED = (
    "ARRAY(SELECT k FROM jsonb_object_keys(x.record) AS k\n"
    "                         WHERE x.record -> k IS DISTINCT FROM x.old_record -> k)"
)
VARIANTS["chg_each"] = VARIANTS["upd_nosets"].replace(
    _CHANGED,
    "ARRAY(SELECT e.key FROM jsonb_each(x.record) AS e "
    "WHERE e.value IS DISTINCT FROM x.old_record -> e.key)",
)
VARIANTS["chg_sqlfn"] = VARIANTS["upd_nosets"].replace(
    _CHANGED, "pgcast.changed_columns(x.record, x.old_record)"
)
VARIANTS["chg_plpgsql"] = (
    VARIANTS["upd_nosets"]
    .replace(_CHANGED, "pgcast.changed_pl(x.record, x.old_record)")
    .replace(
        "CREATE FUNCTION {t}_u()",
        """
CREATE OR REPLACE FUNCTION pgcast.changed_pl(n jsonb, o jsonb) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE AS $f$
DECLARE k text; r text[] := '{{}}';
BEGIN
  FOR k IN SELECT jsonb_object_keys(n) LOOP
    IF n -> k IS DISTINCT FROM o -> k THEN r := r || k; END IF;
  END LOOP;
  RETURN r;
END $f$;
CREATE FUNCTION {t}_u()""",
    )
)

_KEYS = "'{{id,note,amount,status,created_at,customer_id}}'::text[]"
_PER_COLUMN = (
    "array_remove(ARRAY["
    + ", ".join(
        f"CASE WHEN x.record -> '{c}' IS DISTINCT FROM x.old_record -> '{c}' THEN '{c}' END"
        for c in ("id", "note", "amount", "status", "created_at", "customer_id")
    )
    + "], NULL)"
)
VARIANTS["chg_columns"] = VARIANTS["upd_nosets"].replace(_CHANGED, _PER_COLUMN)
VARIANTS["chg_guarded"] = VARIANTS["upd_nosets"].replace(
    _CHANGED,
    f"CASE WHEN x.record - {_KEYS} = '{{{{}}}}'::jsonb AND x.record ?& {_KEYS} "
    f"THEN {_PER_COLUMN} ELSE {_CHANGED} END",
)

_CHG_EXPR = (
    "ARRAY(SELECT k FROM jsonb_object_keys(n.record) AS k\n"
    "                             WHERE n.record -> k IS DISTINCT FROM o.old_record -> k)"
)
# Variants of the generated function of today (track(), then its text edited).
GEN_EDITS: dict[str, dict[str, str]] = {
    "gen_const_changed": {_CHG_EXPR: "ARRAY['amount']"},
    "gen_no_images": {
        "to_jsonb(r.*) AS record": "'{\"a\": 1}'::jsonb AS record",
        "to_jsonb(r.*) AS old_record": "'{\"a\": 2}'::jsonb AS old_record",
    },
    "gen_no_sets": {
        "SECURITY DEFINER": "",
        " SET search_path TO 'pg_catalog', 'pg_temp'": "",
        " SET jit TO 'off'": "",
        " SET work_mem TO '64MB'": "",
    },
    # changed left NULL (for the reader to compute); skip_unchanged as one jsonb comparison
    "gen_changed_later": {
        "n.record, o.old_record, c.changed": "n.record, o.old_record, NULL",
        "         CROSS JOIN LATERAL (": "         CROSS JOIN LATERAL (SELECT 1 OFFSET 0) AS c "
        "WHERE n.record IS DISTINCT FROM o.old_record ORDER BY n.ord; "
        "GET DIAGNOSTICS v_rows = ROW_COUNT; ELSIF false THEN INSERT INTO pgcast.changes "
        "SELECT FROM (SELECT 1) n, (SELECT 1) o CROSS JOIN LATERAL (",
    },
}
for _name in GEN_EDITS:
    VARIANTS[_name] = ""


async def generated_variant(conn: asyncpg.Connection, table: str, name: str) -> None:
    from pgcast.capture.sql import capture_function, create_triggers, drop_triggers

    await track(conn, parse_table_name(table))
    oid = await conn.fetchval("SELECT $1::regclass::oid", table)
    text = await conn.fetchval(
        "SELECT pg_get_functiondef(to_regprocedure($1))", capture_function(oid)
    )
    copy = f"pgcast.{name}_{oid}()"
    text = text.replace(text[text.index("FUNCTION ") + 9 : text.index("()") + 2], copy, 1)
    for old, new in GEN_EDITS[name].items():
        if old not in text:
            raise SystemExit(f"{name}: {old!r} not in the generated function:\n{text}")
        text = text.replace(old, new)
    await conn.execute(text)
    for statement in drop_triggers(parse_table_name(table)):
        await conn.execute(statement)
    for statement in create_triggers(parse_table_name(table), copy):
        await conn.execute(statement)


# SECURITY DEFINER with and without SET clauses, statement-level and row-level.
VARIANTS["plain_secdef"] = VARIANTS["plain"].replace(
    "LANGUAGE plpgsql AS", "LANGUAGE plpgsql SECURITY DEFINER AS"
)
VARIANTS["row_secdef"] = VARIANTS["row"].replace(
    "LANGUAGE plpgsql AS", "LANGUAGE plpgsql SECURITY DEFINER AS"
)
VARIANTS["row_definer"] = VARIANTS["row"].replace(
    "LANGUAGE plpgsql AS",
    "LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS",
)
VARIANTS["row_nochanged"] = VARIANTS["row_secdef"].replace(
    "ARRAY(SELECT k FROM jsonb_object_keys(n) AS k WHERE n -> k IS DISTINCT FROM o -> k)",
    "NULL",
)

VARIANTS["plain_secdef_jit"] = VARIANTS["plain"].replace(
    "LANGUAGE plpgsql AS", "LANGUAGE plpgsql SECURITY DEFINER SET jit = off AS"
)

# Row-level UPDATE capture as generated since schema version 5: `changed` from the
# columns known when the function was made, as one plain expression (no sub-select),
# with the sub-select only when a column was added since.
_KNOWN = ("id", "note", "amount", "status", "created_at", "customer_id")
_CASES = ",\n        ".join(
    f"CASE WHEN v_new -> '{c}' IS DISTINCT FROM v_old -> '{c}' THEN '{c}' END" for c in _KNOWN
)
VARIANTS["row_update"] = """
CREATE FUNCTION {t}_u() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET jit = off AS $$
DECLARE v_new jsonb; v_old jsonb; v_changed text[]; BEGIN
    v_new := to_jsonb(NEW);
    v_old := to_jsonb(OLD);
    IF (v_new - '@KNOWN@'::text[]) IS DISTINCT FROM (v_old - '@KNOWN@'::text[]) THEN
        v_changed := ARRAY(SELECT k FROM jsonb_object_keys(v_new) AS k
                            WHERE v_new -> k IS DISTINCT FROM v_old -> k);
    ELSE
        v_changed := array_remove(ARRAY[@CASES@]::text[], NULL);
    END IF;
    IF cardinality(v_changed) > 0 THEN
        INSERT INTO pgcast.changes (txid, tx_xmin, committed_at, schema_name, table_name, op,
                                    record, old_record, changed)
        VALUES (pg_current_xact_id(), pg_snapshot_xmin(pg_current_snapshot()),
                clock_timestamp(), TG_TABLE_SCHEMA, TG_TABLE_NAME, 'UPDATE', v_new, v_old,
                v_changed);
    END IF;
    RETURN NULL; END $$;
CREATE TRIGGER b AFTER UPDATE ON {t} FOR EACH ROW EXECUTE FUNCTION {t}_u();
""".replace("@KNOWN@", "{{" + ",".join(_KNOWN) + "}}").replace("@CASES@", _CASES)

if __name__ == "__main__":
    main()
