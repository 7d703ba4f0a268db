import { Filter } from './filters.js';
export type Row = import('./types.js').Row;
/** @typedef {import('./types.js').Row} Row */
/**
 * A local copy of a table's rows (for one filter) built from `snapshot` frames and
 * `change` frames, applied by primary key as docs/protocol.md ("Building a mirror")
 * says. `key` is a column name (default "id") or a function row -> key.
 * @template {Row} [R=Row]
 */
export declare class TableMirror<R extends Row = Row> {
    /** @type {Filter} */
    filter: Filter;
    /** @type {(row: R) => unknown} */
    keyOf: (row: R) => unknown;
    /** Incremented on every visible change. */
    version: number;
    /** @param {{filter?: string | Filter | null, key?: import('./types.js').KeyOption<R>}} [options] */
    constructor({ filter, key }?: {
        filter?: string | Filter | null;
        key?: import('./types.js').KeyOption<R>;
    });
    /**
     * Apply a `snapshot` frame; part 0 starts over. True when the visible rows changed.
     * @param {import('./types.js').SnapshotFrame<R>} frame
     * @returns {boolean}
     */
    applySnapshot(frame: import('./types.js').SnapshotFrame<R>): boolean;
    /**
     * Apply a `change` frame. True when the visible rows changed.
     * @param {import('./types.js').ChangeFrame<R>} frame
     * @returns {boolean}
     */
    applyChange(frame: import('./types.js').ChangeFrame<R>): boolean;
    /** Forget every row (for example before a fresh snapshot after `resync`). */
    clear(): void;
    /** @returns {number} */
    get size(): number;
    /**
     * @param {unknown} key
     * @returns {R | undefined}
     */
    get(key: unknown): R | undefined;
    /**
     * The rows, in snapshot order then arrival order.
     * @returns {R[]}
     */
    rows(): R[];
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
export declare function watchTable<R extends Row = Row>(client: import('./client.js').Client, request: import('./types.js').WatchTableRequest<R>, { onRows, onChange, onError, onSubscribed }?: import('./types.js').WatchTableHandlers<R>): import('./types.js').TableWatch<R>;
