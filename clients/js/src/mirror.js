// A table's rows kept in step with its stream: TableMirror (snapshot + changes
// applied by primary key) and watchTable (a subscription feeding a mirror, rebuilt
// from a fresh snapshot on resync).

import { safeCall } from './errors.js';
import { Filter, parseFilter } from './filters.js';

/** @typedef {import('./types.js').Row} Row */

/**
 * A local copy of a table's rows (for one filter) built from `snapshot` frames and
 * `change` frames, applied by primary key as docs/protocol.md ("Building a mirror")
 * says. `key` is a column name (default "id") or a function row -> key.
 * @template {Row} [R=Row]
 */
export class TableMirror {
  /** @internal @type {Map<unknown, R>} */
  _rows;
  /** @internal @type {Map<unknown, R> | null} rows of a snapshot still arriving */
  _pending;

  /** @param {{filter?: string | Filter | null, key?: import('./types.js').KeyOption<R>}} [options] */
  constructor({ filter, key = 'id' } = {}) {
    /** @type {Filter} */
    this.filter = typeof filter === 'object' && filter !== null ? filter : parseFilter(/** @type {string} */ (filter));
    /** @type {(row: R) => unknown} */
    this.keyOf = typeof key === 'function' ? key : (row) => row[key];
    this._rows = new Map();
    this._pending = null;
    /** Incremented on every visible change. */
    this.version = 0;
  }
  /**
   * Apply a `snapshot` frame; part 0 starts over. True when the visible rows changed.
   * @param {import('./types.js').SnapshotFrame<R>} frame
   * @returns {boolean}
   */
  applySnapshot(frame) {
    if (frame.part === 0 || this._pending === null) this._pending = new Map();
    for (const row of frame.rows || []) this._pending.set(this._key(row), row);
    if (!frame.done) return false;
    this._rows = this._pending;
    this._pending = null;
    this.version += 1;
    return true;
  }
  /**
   * Apply a `change` frame. True when the visible rows changed.
   * @param {import('./types.js').ChangeFrame<R>} frame
   * @returns {boolean}
   */
  applyChange(frame) {
    const { op, record, old_record: old } = frame;
    let changed = false;
    if (op === 'TRUNCATE') {
      changed = this._rows.size > 0;
      this._rows = new Map();
      if (this._pending) this._pending = new Map();
    } else if (op === 'DELETE') {
      if (old) changed = this._rows.delete(this._key(old));
    } else if (op === 'INSERT' || op === 'UPDATE') {
      if (!record) return false;
      const key = this._key(record);
      if (old) {
        const oldKey = this._key(old);
        if (oldKey !== key) changed = this._rows.delete(oldKey) || changed;
      }
      if (this.filter.matches(record)) {
        this._rows.set(key, record);
        changed = true;
      } else {
        changed = this._rows.delete(key) || changed;
      }
    }
    if (changed) this.version += 1;
    return changed;
  }
  /** Forget every row (for example before a fresh snapshot after `resync`). */
  clear() {
    this._rows = new Map();
    this._pending = null;
    this.version += 1;
  }
  /** @returns {number} */
  get size() {
    return this._rows.size;
  }
  /**
   * @param {unknown} key
   * @returns {R | undefined}
   */
  get(key) {
    return this._rows.get(normalizeKey(key));
  }
  /**
   * The rows, in snapshot order then arrival order.
   * @returns {R[]}
   */
  rows() {
    return Array.from(this._rows.values());
  }
  /** @internal @param {R} row */
  _key(row) {
    return normalizeKey(this.keyOf(row));
  }
}

// Keys become map keys: objects/arrays (composite keys) by their JSON text.
/** @param {unknown} key */
function normalizeKey(key) {
  return key !== null && typeof key === 'object' ? JSON.stringify(key) : key;
}

/**
 * A live mirror of a table through `client`: subscribes with a snapshot, applies
 * changes by primary key, drops rows whose new record leaves the filter, clears on
 * TRUNCATE, and re-snapshots on `resync`. `onRows(rows, mirror)` runs after every
 * visible change. Throws FilterError at once for a filter the gateway would refuse.
 * @template {Row} [R=Row]
 * @param {import('./client.js').Client} client
 * @param {import('./types.js').WatchTableRequest<R>} request
 * @param {import('./types.js').WatchTableHandlers<R>} [handlers]
 * @returns {import('./types.js').TableWatch<R>}
 */
export function watchTable(client, request, { onRows, onChange, onError, onSubscribed } = {}) {
  const { key = 'id', filter, columns, ...rest } = request || /** @type {any} */ ({});
  const parsed = parseFilter(filter);
  let wanted = columns;
  if (columns != null) {
    // The mirror tests the filter on each record, so it needs the filter's and the key's columns.
    const extra = [...parsed.columns, ...(typeof key === 'string' ? [key] : [])];
    wanted = [...new Set([...columns, ...extra])];
  }
  /** @type {TableMirror<R>} */
  const mirror = new TableMirror({ filter: parsed, key });
  /** @type {import('./subscription.js').Subscription} */
  let sub;
  let stopped = false;
  const start = () => {
    sub = client.subscribe({ ...rest, filter, columns: wanted, snapshot: true }, {
      onSnapshot: (frame) => {
        if (mirror.applySnapshot(/** @type {any} */ (frame))) safeCall(onRows, mirror.rows(), mirror);
      },
      onChange: (frame) => {
        if (mirror.applyChange(/** @type {any} */ (frame))) safeCall(onRows, mirror.rows(), mirror);
        safeCall(onChange, frame);
      },
      onResync: () => {
        // The log no longer covers our position: rebuild from a fresh snapshot
        // (the current rows stay visible until it is complete).
        if (stopped) return;
        sub.unsubscribe();
        start();
      },
      onSubscribed: (frame) => safeCall(onSubscribed, frame),
      onError: (error) => safeCall(onError, error),
    });
  };
  start();
  return {
    mirror,
    get subscription() {
      return sub;
    },
    unsubscribe() {
      stopped = true;
      sub.unsubscribe();
    },
  };
}
