// React hooks over the pgcast client: useTable (a live mirror), useChanges
// (callbacks), useChannel (raw NOTIFY channels), useGatewayStatus.
//
// Every hook uses the shared client of its URL (`getClient`), so all components
// on a page share one connection per gateway. Callbacks are read through refs:
// re-rendering with new callback functions never resubscribes (the reconnect loop
// the hand-written hooks fell into). Subscriptions are keyed only by what changes
// the stream (table, schema, filter, columns, events, url).
//
// Plain ES module importing 'react' (an import map in the browser, a bundler, or
// Node resolution); no JSX, no build step.

import { useCallback, useEffect, useMemo, useRef, useState, useSyncExternalStore } from 'react';
import { getClient } from './pgcast.js';

/** @typedef {import('./pgcast.js').Row} Row */
/** @typedef {import('./pgcast.js').Status} Status */
/** @typedef {import('./pgcast.js').PgcastError} PgcastError */
/**
 * @template {Row} [R=Row]
 * @typedef {import('./pgcast.js').ChangeFrame<R>} ChangeFrame
 */

/**
 * @typedef {object} ConnectionOptions
 * @property {string} [url] Gateway URL; omitted in a browser: the page's origin. One shared client per URL.
 * @property {string} [token]
 * @property {import('./pgcast.js').ClientOptions['getToken']} [getToken]
 * @property {Omit<import('./pgcast.js').ClientOptions, 'url' | 'token' | 'getToken'>} [clientOptions] Other client options; they apply only when the URL's client is first created.
 */

/**
 * @typedef {object} StreamOptions
 * @property {string} [filter]
 * @property {string} [schema]
 * @property {string[]} [columns]
 * @property {import('./pgcast.js').Operation[]} [events]
 */

/**
 * @template {Row} [R=Row]
 * @typedef {ConnectionOptions & StreamOptions & {key?: import('./pgcast.js').KeyOption<R>}} UseTableOptions
 * `key`: the primary key column (default "id") or a function returning the key.
 */

/**
 * @template {Row} [R=Row]
 * @typedef {object} UseTableResult
 * @property {R[]} rows
 * @property {Status} status
 * @property {PgcastError | null} error
 * @property {boolean} ready True once the first snapshot is complete.
 */

/**
 * @template {Row} [R=Row]
 * @typedef {object} ChangeCallbacks
 * @property {(record: R, change: ChangeFrame<R>) => void} [onInsert]
 * @property {(record: R, oldRecord: R | null, change: ChangeFrame<R>) => void} [onUpdate]
 * @property {(oldRecord: R, change: ChangeFrame<R>) => void} [onDelete]
 * @property {(change: ChangeFrame<R>) => void} [onTruncate]
 * @property {(change: ChangeFrame<R>) => void} [onChange]
 * @property {(frame: import('./pgcast.js').ResyncFrame) => void} [onResync]
 */

/**
 * @template {Row} [R=Row]
 * @typedef {ConnectionOptions & StreamOptions & ChangeCallbacks<R>} UseChangesOptions
 */

function clientOptions(options) {
  const { token, getToken, clientOptions: extra } = options;
  const out = { ...(extra || {}) };
  if (token !== undefined) out.token = token;
  if (getToken !== undefined) out.getToken = getToken;
  return out;
}

/**
 * The shared client for `options.url` (options apply when it is first created).
 * @param {ConnectionOptions} [options]
 * @returns {import('./pgcast.js').Client}
 */
export function useClient(options = {}) {
  const { url } = options;
  const optionsRef = useRef(options);
  optionsRef.current = options;
  return useMemo(() => getClient(url, clientOptions(optionsRef.current)), [url]);
}

/**
 * @param {import('./pgcast.js').Client} client
 * @returns {Status}
 */
function useStatus(client) {
  const subscribe = useCallback((onChange) => client.on('status', onChange), [client]);
  const read = useCallback(() => client.status, [client]);
  return useSyncExternalStore(subscribe, read, read);
}

/**
 * The gateway connection status: 'connecting' | 'live' | 'offline' | 'closed'.
 * @param {ConnectionOptions} [options]
 * @returns {Status}
 */
export function useGatewayStatus(options = {}) {
  return useStatus(useClient(options));
}

// One frozen empty list: a render with no rows yet keeps the same array.
const EMPTY = /** @type {any[]} */ (/** @type {unknown} */ (Object.freeze([])));

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
export function useTable(table, options = {}) {
  const { filter, schema, columns, events, key = 'id' } = options;
  const client = useClient(options);
  const status = useStatus(client);
  const [state, setState] = useState({ rows: EMPTY, error: null, ready: false });
  const keyRef = useRef(key);
  keyRef.current = key;
  const keyIsFunction = typeof key === 'function';
  const columnsKey = columns ? JSON.stringify(columns) : '';
  const eventsKey = events ? JSON.stringify(events) : '';

  useEffect(() => {
    let active = true;
    /** @type {import('./pgcast.js').TableWatch<any> | null} */
    let watch = null;
    try {
      watch = client.watchTable(
        {
          table,
          schema,
          filter,
          columns: columnsKey ? JSON.parse(columnsKey) : undefined,
          events: eventsKey ? JSON.parse(eventsKey) : undefined,
          key: keyIsFunction ? (row) => keyRef.current(row) : keyRef.current,
        },
        {
          onRows: (rows) => active && setState({ rows, error: null, ready: true }),
          onError: (error) => active && setState((s) => ({ ...s, error })),
        },
      );
    } catch (error) {
      setState({ rows: EMPTY, error, ready: false });
      return undefined;
    }
    return () => {
      active = false;
      watch.unsubscribe();
      // The next subscription starts from its own snapshot.
      setState((s) => (s.rows === EMPTY && !s.error && !s.ready ? s : { rows: EMPTY, error: null, ready: false }));
    };
  }, [client, table, schema, filter, columnsKey, eventsKey, keyIsFunction ? '' : key, keyIsFunction]);

  return { rows: state.rows, status, error: state.error || client.error, ready: state.ready };
}

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
export function useChanges(table, options = {}) {
  const { filter, schema, columns, events } = options;
  const client = useClient(options);
  const status = useStatus(client);
  const [error, setError] = useState(null);
  const handlersRef = useRef(options);
  handlersRef.current = options;
  const columnsKey = columns ? JSON.stringify(columns) : '';
  const eventsKey = events ? JSON.stringify(events) : '';

  useEffect(() => {
    let active = true;
    setError(null);
    const sub = client.subscribe(
      {
        table,
        schema,
        filter,
        columns: columnsKey ? JSON.parse(columnsKey) : undefined,
        events: eventsKey ? JSON.parse(eventsKey) : undefined,
      },
      {
        onChange: (change) => {
          const h = handlersRef.current;
          if (h.onChange) h.onChange(change);
          if (change.op === 'INSERT' && h.onInsert) h.onInsert(change.record, change);
          else if (change.op === 'UPDATE' && h.onUpdate) h.onUpdate(change.record, change.old_record, change);
          else if (change.op === 'DELETE' && h.onDelete) h.onDelete(change.old_record, change);
          else if (change.op === 'TRUNCATE' && h.onTruncate) h.onTruncate(change);
        },
        onResync: (frame) => {
          const h = handlersRef.current;
          if (h.onResync) h.onResync(frame);
        },
        onError: (e) => active && setError(e),
      },
    );
    return () => {
      active = false;
      sub.unsubscribe();
    };
  }, [client, table, schema, filter, columnsKey, eventsKey]);

  return { status, error: error || client.error };
}

/**
 * A raw NOTIFY channel: `onMessage(payload, frame)` for each message (`payload` is
 * the NOTIFY payload string, exactly as sent; pass null to only publish).
 * Returns `{publish, status, error}`; `publish(payload)` is stable across renders.
 * @param {string} name
 * @param {((payload: string, frame: import('./pgcast.js').MessageFrame) => void) | null | undefined} onMessage
 * @param {ConnectionOptions} [options]
 * @returns {{publish: (payload: unknown) => string | null, status: Status, error: PgcastError | null}}
 */
export function useChannel(name, onMessage, options = {}) {
  const client = useClient(options);
  const status = useStatus(client);
  const [error, setError] = useState(null);
  const onMessageRef = useRef(onMessage);
  onMessageRef.current = onMessage;
  const listening = typeof onMessage === 'function';
  const channel = useMemo(() => client.channel(name), [client, name]);

  useEffect(() => {
    let active = true;
    const offError = channel.on('error', (e) => active && setError(e));
    const offMessage = listening
      ? channel.on('message', (frame) => onMessageRef.current && onMessageRef.current(frame.payload, frame))
      : () => {};
    return () => {
      active = false;
      offMessage();
      offError();
    };
  }, [channel, listening]);

  const publish = useCallback((payload) => channel.publish(payload), [channel]);
  return { publish, status, error: error || client.error };
}
