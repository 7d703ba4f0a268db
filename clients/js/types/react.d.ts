export type Row = import('./pgcast.js').Row;
export type Status = import('./pgcast.js').Status;
export type PgcastError = import('./pgcast.js').PgcastError;
export type ChangeFrame<R extends Row = Row> = import('./pgcast.js').ChangeFrame<R>;
export type ConnectionOptions = {
    /**
     * Gateway URL; omitted in a browser: the page's origin. One shared client per URL.
     */
    url?: string;
    token?: string;
    getToken?: import('./pgcast.js').ClientOptions['getToken'];
    /**
     * Other client options; they apply only when the URL's client is first created.
     */
    clientOptions?: Omit<import('./pgcast.js').ClientOptions, 'url' | 'token' | 'getToken'>;
};
export type StreamOptions = {
    filter?: string;
    schema?: string;
    columns?: string[];
    events?: import('./pgcast.js').Operation[];
};
export type UseTableOptions<R extends Row = Row> = ConnectionOptions & StreamOptions & {
    key?: import('./pgcast.js').KeyOption<R>;
};
export type UseTableResult<R extends Row = Row> = {
    rows: R[];
    status: Status;
    error: PgcastError | null;
    /**
     * True once the first snapshot is complete.
     */
    ready: boolean;
};
export type ChangeCallbacks<R extends Row = Row> = {
    onInsert?: (record: R, change: ChangeFrame<R>) => void;
    onUpdate?: (record: R, oldRecord: R | null, change: ChangeFrame<R>) => void;
    onDelete?: (oldRecord: R, change: ChangeFrame<R>) => void;
    onTruncate?: (change: ChangeFrame<R>) => void;
    onChange?: (change: ChangeFrame<R>) => void;
    onResync?: (frame: import('./pgcast.js').ResyncFrame) => void;
};
export type UseChangesOptions<R extends Row = Row> = ConnectionOptions & StreamOptions & ChangeCallbacks<R>;
/**
 * The shared client for `options.url` (options apply when it is first created).
 * @param {ConnectionOptions} [options]
 * @returns {import('./pgcast.js').Client}
 */
export declare function useClient(options?: ConnectionOptions): import('./pgcast.js').Client;
/**
 * The gateway connection status: 'connecting' | 'live' | 'offline' | 'closed'.
 * @param {ConnectionOptions} [options]
 * @returns {Status}
 */
export declare function useGatewayStatus(options?: ConnectionOptions): Status;
/**
 * A live mirror of `table`: `{rows, status, error, ready}`. The rows are the
 * snapshot, then every change applied by primary key (`key`: column name, default
 * "id", or a function row -> key). An UPDATE whose new record leaves the filter
 * removes the row; TRUNCATE clears; a `resync` re-snapshots.
 * @template {Row} [R=Row]
 * @param {string} table
 * @param {UseTableOptions<R>} [options]
 * @returns {UseTableResult<R>}
 */
export declare function useTable<R extends Row = Row>(table: string, options?: UseTableOptions<R>): UseTableResult<R>;
/**
 * Row-change callbacks for `table`: `onInsert(record, change)`,
 * `onUpdate(record, oldRecord, change)`, `onDelete(oldRecord, change)`,
 * `onTruncate(change)`, `onChange(change)` (every change), `onResync(frame)`.
 * Returns `{status, error}`.
 * @template {Row} [R=Row]
 * @param {string} table
 * @param {UseChangesOptions<R>} [options]
 * @returns {{status: Status, error: PgcastError | null}}
 */
export declare function useChanges<R extends Row = Row>(table: string, options?: UseChangesOptions<R>): {
    status: Status;
    error: PgcastError | null;
};
/**
 * A raw NOTIFY channel: `onMessage(payload, frame)` for each message (`payload` is
 * the NOTIFY payload string, exactly as sent; pass null to only publish).
 * Returns `{publish, status, error}`; `publish(payload)` is stable across renders.
 * @param {string} name
 * @param {((payload: string, frame: import('./pgcast.js').MessageFrame) => void) | null | undefined} onMessage
 * @param {ConnectionOptions} [options]
 * @returns {{publish: (payload: unknown) => string | null, status: Status, error: PgcastError | null}}
 */
export declare function useChannel(name: string, onMessage: ((payload: string, frame: import('./pgcast.js').MessageFrame) => void) | null | undefined, options?: ConnectionOptions): {
    publish: (payload: unknown) => string | null;
    status: Status;
    error: PgcastError | null;
};
export type UsePresenceOptions = ConnectionOptions & {
    state?: Record<string, unknown>;
    key?: string;
};
/**
 * @typedef {ConnectionOptions & {state?: Record<string, unknown>, key?: string}} UsePresenceOptions
 * `state`: tracked while the component is mounted (re-tracked when it changes by
 * value); omit it to only watch. `key`: the presence key (default: the token's
 * subject, else an id of the connection).
 */
/**
 * The presence of topic `name` on every gateway node: `{presence, track, untrack,
 * status, error}`. `presence` is `{key: {metas: [...]}}` and a new object on each change.
 * @param {string} name
 * @param {UsePresenceOptions} [options]
 * @returns {{presence: import('./pgcast.js').PresenceState, track: (state: Record<string, unknown>) => void, untrack: () => void, status: Status, error: PgcastError | null}}
 */
export declare function usePresence(name: string, options?: UsePresenceOptions): {
    presence: import('./pgcast.js').PresenceState;
    track: (state: Record<string, unknown>) => void;
    untrack: () => void;
    status: Status;
    error: PgcastError | null;
};
export type UseBroadcastOptions = ConnectionOptions & {
    self?: boolean;
    ack?: boolean;
};
/**
 * @typedef {ConnectionOptions & {self?: boolean, ack?: boolean}} UseBroadcastOptions
 */
/**
 * Broadcasts on topic `name`: `onBroadcast(event, payload)` for each one (null: only
 * send). Returns `{send, status, error}`; `send(event, payload)` is stable across
 * renders and returns a Promise (see Topic.broadcast).
 * @param {string} name
 * @param {((event: string, payload: unknown) => void) | null | undefined} onBroadcast
 * @param {UseBroadcastOptions} [options]
 * @returns {{send: (event: string, payload: unknown) => Promise<void>, status: Status, error: PgcastError | null}}
 */
export declare function useBroadcast(name: string, onBroadcast: ((event: string, payload: unknown) => void) | null | undefined, options?: UseBroadcastOptions): {
    send: (event: string, payload: unknown) => Promise<void>;
    status: Status;
    error: PgcastError | null;
};
