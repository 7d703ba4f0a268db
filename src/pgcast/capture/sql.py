"""SQL text of change capture (pure: builds strings, runs nothing).

This module owns the database side of the contract with the gateway: the
``pgcast`` schema (the ``changes`` log, the ``tracked`` options, the ``state``
key/value table, the ``wake`` sequence), ``pgcast.generate_capture()``, which makes
each tracked table's own capture trigger function, and the four statement-level
triggers put on each tracked table.
:mod:`pgcast.capture.installer` applies this text with asyncpg.

Why statement-level triggers with transition tables: one trigger call per
statement, whatever the number of rows, so a 100,000-row UPDATE costs one
``INSERT ... SELECT`` into the log, instead of 100,000 trigger calls. PostgreSQL
allows only one event per trigger that has transition tables, hence four triggers
sharing one function.

Identifiers are spliced in only through :func:`pgcast.identifiers.quote_ident`
(or ``format('%I')`` inside PL/pgSQL); values are always query parameters.
"""

from __future__ import annotations

from pgcast.identifiers import TableName, quote_ident

__all__ = [
    "CAPTURE_PREFIX",
    "CHANNEL",
    "INSTALL_LOCK_KEY",
    "LEGACY_CAPTURE",
    "SCHEMA",
    "SCHEMA_VERSION",
    "TRIGGERS",
    "WAKE_CLAIM",
    "WAKE_SEQUENCE",
    "WAKE_STRIDE",
    "capture_function",
    "create_triggers",
    "drop_triggers",
    "install_script",
]

SCHEMA = "pgcast"
"""The schema that holds every object pgcast creates."""

SCHEMA_VERSION = 4
"""Version of the objects below; stored as ``pgcast.state['schema_version']``.

2: row images built from whole-row references that no column name can shadow.
3: no NOTIFY per transaction: the one-shot wake-up sequence (``pgcast.wake``).
4: one generated capture function per tracked table (``pgcast.capture_<oid>()``,
   see :func:`capture_function`) instead of the generic ``pgcast.capture()``,
   which reads the table's options at every statement.
"""

LEGACY_CAPTURE = "capture"
"""The generic capture function of versions 1-3; upgrading moves its tables to
generated functions and drops it."""

CHANNEL = "pgcast"
"""The NOTIFY channel the capture trigger wakes an idle gateway on."""

WAKE_SEQUENCE = "wake"
"""The sequence (in :data:`SCHEMA`) that is the one-shot wake-up of an idle gateway.

``is_called = false`` means armed: a gateway went idle and wants one notification.
The gateway arms it with ``setval(s, v, false)``, ``v`` a multiple of
:data:`WAKE_STRIDE`; the first capture that sees it armed gets ``v`` from
``nextval`` and sends the one ``pg_notify``; every other capture gets ``v + 1``,
``v + 2``... and sends none. Sequences are not transactional, so arming, claiming
and reading it never wait for, or serialize, anyone's commit (see wakeup.py)."""

WAKE_STRIDE = 1 << 20
"""Armed values are multiples of this, so a capture recognises the armed value
without reading it: checking ``pg_sequence_last_value() IS NULL`` is a plain
PL/pgSQL expression (no executor start-up), measured ~3x cheaper per statement
than ``SELECT last_value, is_called FROM`` the sequence. A false win would need
2^20 claims between two armings."""

INSTALL_LOCK_KEY = 0x70676361_7374_01
"""``pg_advisory_xact_lock`` key serializing concurrent installs ('pgcast' + 1)."""

# (trigger name, event, REFERENCING clause); order is the order of creation.
# Every trigger runs per statement. A row-level UPDATE trigger was tried (no pairing
# query, `changed` as plain expressions): one-row UPDATEs gained (0.56 -> 0.63 of the
# untracked rate at 16 writers, no gateway) but a 100,000-row UPDATE went from 2.4x
# to 3.7x the untracked time, past the 3x bound, and a row-level trigger misses rows
# moved between partitions and rows of inheritance children (bench/RESULTS.md,
# "Row-level UPDATE capture: tried, not kept").
TRIGGERS: tuple[tuple[str, str, str], ...] = (
    ("pgcast_capture_insert", "INSERT", "REFERENCING NEW TABLE AS pgcast_new"),
    (
        "pgcast_capture_update",
        "UPDATE",
        "REFERENCING OLD TABLE AS pgcast_old NEW TABLE AS pgcast_new",
    ),
    ("pgcast_capture_delete", "DELETE", "REFERENCING OLD TABLE AS pgcast_old"),
    ("pgcast_capture_truncate", "TRUNCATE", ""),
)

_S = quote_ident(SCHEMA)

# For a writer that is not the capture trigger (the WAL consumer appends to the log
# in its own transactions): claim the armed wake-up as the trigger does, in one
# statement. True: this transaction holds the armed value and must notify. CASE
# fixes the order: nextval only when armed and the queue has room.
WAKE_CLAIM = f"""
SELECT CASE WHEN pg_sequence_last_value('{_S}.{quote_ident(WAKE_SEQUENCE)}') IS NULL
             AND pg_notification_queue_usage() < 0.5
            THEN nextval('{_S}.{quote_ident(WAKE_SEQUENCE)}') % {WAKE_STRIDE} = 0
            ELSE false END
"""

_TABLES = f"""
CREATE SCHEMA IF NOT EXISTS {_S};

CREATE TABLE IF NOT EXISTS {_S}.changes (
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
CREATE INDEX IF NOT EXISTS changes_txid_idx ON {_S}.changes (txid);

CREATE TABLE IF NOT EXISTS {_S}.tracked (
    relid regclass PRIMARY KEY,
    columns text[],
    when_changed text[],
    skip_unchanged boolean NOT NULL DEFAULT true,
    tracked_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS {_S}.state (
    key text PRIMARY KEY,
    value text NOT NULL
);

-- CACHE 1: a per-session cache would hand the armed value to one session only.
CREATE SEQUENCE IF NOT EXISTS {_S}.{quote_ident(WAKE_SEQUENCE)}
    AS bigint START WITH {WAKE_STRIDE} CACHE 1;
"""

_CHANGED_COLUMNS = f"""
CREATE OR REPLACE FUNCTION {_S}.changed_columns(new jsonb, old jsonb)
RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    -- jsonb_object_keys + "->" is about a third cheaper than jsonb_each, which
    -- builds a tuplestore per call.
    SELECT ARRAY(SELECT k FROM jsonb_object_keys(new) AS k
                  WHERE new -> k IS DISTINCT FROM old -> k)
$$;
COMMENT ON FUNCTION {_S}.changed_columns(jsonb, jsonb) IS
    'pgcast: keys of new whose value differs from (or is missing in) old, in jsonb key order.';
"""

# Notes on the capture functions below, the hot path of every tracked write:
# * One generated function per tracked table (pgcast.capture_<table oid>), made by
#   pgcast.generate_capture() when the table is tracked: the table's options
#   (columns, when_changed, skip_unchanged) are constants in its body, so a write
#   runs no query on pgcast.tracked and only the code its options need. A generic
#   function reading the options per statement cost the writer about 40% more CPU
#   per captured statement (bench/RESULTS.md, "Where a tracked writer's time goes").
#   The body is built server-side with format('%L'), so no column name reaches it
#   unquoted; re-tracking the table regenerates it.
# * SECURITY DEFINER: a role that may write the tracked table but has no rights
#   on the pgcast schema must still be able to write (invariant 7); the fixed
#   search_path is what makes SECURITY DEFINER safe.
# * Row images are to_jsonb(r.*), never to_jsonb(r): PostgreSQL resolves a bare
#   name as a column before a table alias, so a tracked column named like the
#   alias would be logged as the row (or break the write), while ``alias.*`` only
#   ever names the relation. ``#variable_conflict use_variable`` likewise keeps a
#   column named v_txid or tg_op from making a variable reference ambiguous
#   (an error that would abort the user's statement).
# * No RAISE and no EXCEPTION block: the trigger must not abort the user's
#   statement for pgcast's own reasons, and an EXCEPTION block would open a
#   subtransaction per statement.
# * PL/pgSQL plans each statement on first execution, so the UPDATE branch that
#   names pgcast_old is only planned where that transition table exists.
# * UPDATE pairs old and new rows by ordinal position: PostgreSQL appends the
#   old and the new tuple of each row to the two transition tables together.
#   (Zipping two ARRAY(...)s with unnest would avoid the join but builds each side
#   as one in-memory array, capped at 1 GB: a big UPDATE of big rows would fail.)
# * columns: the columns to drop are read at each statement, not at track time, so
#   columns added later are projected away too (only tables with a column list).
# * No NOTIFY per transaction: PostgreSQL makes every transaction that notified
#   take a cluster-wide lock at pre-commit and hold it until its commit record is
#   flushed (PreCommit_Notify in async.c), so notifying commits run one at a time
#   and lose group commit (4x fewer commits/s at 16 writers). The gateway polls
#   the log instead, and while it is idle it arms the wake sequence; only the one
#   capture that claims the armed value notifies (at most one notification per
#   arming, see WAKE_SEQUENCE). Reading the sequence takes no lock that lasts
#   beyond the statement. Above half a full queue we do not claim, rather than risk
#   "queue is full" errors; the gateway's polling still finds the rows.
# * jit = off: a PL/pgSQL statement without parameters keeps the plan made at its
#   first run, costed with that statement's transition-table size, so a first
#   statement of millions of rows would leave JIT compilation (~150 ms) in the
#   plan of every later one-row statement. work_mem = 64MB: lets the two ordinal
#   sorts of a 100,000-row UPDATE stay in memory (they are already in order, so
#   sorting them is a linear check) instead of spilling to disk at the 4MB default.
#
# The template's @...@ markers are replaced by generate_capture() (with replace(),
# the values quoted by format('%L')).
_CAPTURE_BODY = f"""
#variable_conflict use_variable
DECLARE
    v_txid     xid8        := pg_current_xact_id();
    v_xmin     xid8        := pg_snapshot_xmin(pg_current_snapshot());
    v_at       timestamptz := clock_timestamp();
    v_drop     text[]      := '{{}}';
    v_rows     bigint      := 0;
BEGIN@DROP@
    IF TG_OP = 'INSERT' THEN
        INSERT INTO {_S}.changes
               (txid, tx_xmin, committed_at, schema_name, table_name, op, record)
        SELECT v_txid, v_xmin, v_at, TG_TABLE_SCHEMA, TG_TABLE_NAME, 'INSERT', @IMAGE@
          FROM pgcast_new AS r;
        GET DIAGNOSTICS v_rows = ROW_COUNT;

    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO {_S}.changes
               (txid, tx_xmin, committed_at, schema_name, table_name, op,
                record, old_record, changed)
        SELECT v_txid, v_xmin, v_at, TG_TABLE_SCHEMA, TG_TABLE_NAME, 'UPDATE',
               n.record, o.old_record, c.changed
          FROM (SELECT row_number() OVER () AS ord, @IMAGE@ AS record
                  FROM pgcast_new AS r) AS n
          JOIN (SELECT row_number() OVER () AS ord, @IMAGE@ AS old_record
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
         WHERE @FILTER@
         ORDER BY n.ord;
        GET DIAGNOSTICS v_rows = ROW_COUNT;

    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO {_S}.changes
               (txid, tx_xmin, committed_at, schema_name, table_name, op, old_record)
        SELECT v_txid, v_xmin, v_at, TG_TABLE_SCHEMA, TG_TABLE_NAME, 'DELETE', @IMAGE@
          FROM pgcast_old AS r;
        GET DIAGNOSTICS v_rows = ROW_COUNT;

    ELSIF TG_OP = 'TRUNCATE' THEN
        INSERT INTO {_S}.changes
               (txid, tx_xmin, committed_at, schema_name, table_name, op)
        VALUES (v_txid, v_xmin, v_at, TG_TABLE_SCHEMA, TG_TABLE_NAME, 'TRUNCATE');
        v_rows := 1;
    END IF;

    -- NULL last value: not called since the gateway's setval, i.e. armed.
    IF v_rows > 0
       AND pg_sequence_last_value('{_S}.{quote_ident(WAKE_SEQUENCE)}') IS NULL THEN
        IF pg_notification_queue_usage() < 0.5 THEN
            IF nextval('{_S}.{quote_ident(WAKE_SEQUENCE)}') % {WAKE_STRIDE} = 0 THEN
                PERFORM pg_notify('{CHANNEL}', '');
            END IF;
        END IF;
    END IF;
    RETURN NULL;
END
"""

_DROP_COLUMNS = """
    IF TG_OP <> 'TRUNCATE' THEN
        SELECT coalesce(array_agg(a.attname::text), '{}')
          INTO v_drop
          FROM pg_attribute AS a
         WHERE a.attrelid = TG_RELID AND a.attnum > 0 AND NOT a.attisdropped
           AND a.attname::text <> ALL (@COLUMNS@::text[]);
    END IF;"""

CAPTURE_PREFIX = "capture_"
"""Name of a table's capture function in :data:`SCHEMA`: this + the table's oid."""

# Generates (or regenerates) the capture function of one tracked table from its
# pgcast.tracked row (defaults if there is none: capture every column and UPDATE
# that changes something) and returns its name as regprocedure text.
_GENERATE = f"""
CREATE OR REPLACE FUNCTION {_S}.generate_capture(p_relid regclass)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $gen$
DECLARE
    v_columns  text[];
    v_when     text[];
    v_skip     boolean;
    v_name     text := '{CAPTURE_PREFIX}' || p_relid::oid::text;
    v_body     text := $body${_CAPTURE_BODY}$body$;
    v_filter   text := 'true';
BEGIN
    SELECT t.columns, t.when_changed, t.skip_unchanged
      INTO v_columns, v_when, v_skip
      FROM {_S}.tracked AS t
     WHERE t.relid = p_relid;
    IF coalesce(v_skip, true) THEN
        v_filter := v_filter || ' AND cardinality(c.changed) > 0';
    END IF;
    IF v_when IS NOT NULL THEN
        v_filter := v_filter || format(' AND c.changed && %L::text[]', v_when);
    END IF;
    IF v_columns IS NULL THEN
        v_body := replace(v_body, '@DROP@', '');
        v_body := replace(v_body, '@IMAGE@', 'to_jsonb(r.*)');
    ELSE
        v_body := replace(v_body, '@DROP@',
                          replace($drop${_DROP_COLUMNS}$drop$, '@COLUMNS@',
                                  format('%L', v_columns)));
        v_body := replace(v_body, '@IMAGE@', '(to_jsonb(r.*) - v_drop)');
    END IF;
    v_body := replace(v_body, '@FILTER@', v_filter);
    EXECUTE format(
        'CREATE OR REPLACE FUNCTION {_S}.%I() RETURNS trigger LANGUAGE plpgsql '
        'SECURITY DEFINER SET search_path = pg_catalog, pg_temp '
        'SET jit = off SET work_mem = %L AS %L',
        v_name, '64MB', v_body);
    EXECUTE format('COMMENT ON FUNCTION {_S}.%I() IS %L', v_name,
                   'pgcast: statement-level capture of ' || p_relid::text
                   || ' into pgcast.changes (generated; re-run track to change).');
    RETURN format('{_S}.%I()', v_name);
END
$gen$;
COMMENT ON FUNCTION {_S}.generate_capture(regclass) IS
    'pgcast: (re)generates the capture function of one tracked table from pgcast.tracked.';
"""


def capture_function(relid: int) -> str:
    """The quoted name of the capture function of the table with oid ``relid``."""
    return f"{_S}.{quote_ident(f'{CAPTURE_PREFIX}{int(relid)}')}()"


def install_script() -> str:
    """The idempotent DDL that creates (or upgrades to) :data:`SCHEMA_VERSION`.

    Run it inside a transaction holding ``pg_advisory_xact_lock(INSTALL_LOCK_KEY)``;
    ``IF NOT EXISTS`` alone still races on the catalogs when two processes install
    at once. It does not record the version; the installer does, as a parameter.
    """
    return _TABLES + _CHANGED_COLUMNS + _GENERATE


def create_triggers(table: TableName, function: str) -> list[str]:
    """Statements putting the four capture triggers on ``table`` (schema-qualified),
    calling ``function`` (:func:`capture_function`)."""
    target = table.quoted()
    return [
        " ".join(
            part
            for part in (
                f"CREATE TRIGGER {quote_ident(name)} AFTER {event} ON {target}",
                referencing,
                f"FOR EACH STATEMENT EXECUTE FUNCTION {function}",
            )
            if part
        )
        for name, event, referencing in TRIGGERS
    ]


def drop_triggers(table: TableName) -> list[str]:
    """Statements removing the four capture triggers from ``table``, if present."""
    target = table.quoted()
    return [f"DROP TRIGGER IF EXISTS {quote_ident(name)} ON {target}" for name, _, _ in TRIGGERS]
