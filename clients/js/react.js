// React hooks over the pgcast client: useTable (a live mirror), useChanges
// (callbacks), useChannel (raw NOTIFY channels), usePresence and useBroadcast
// (topics), useGatewayStatus.
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

// -- topics: presence and broadcast -------------------------------------------------

/** @type {WeakMap<import('./pgcast.js').Topic, number>} components using each topic */
const topicUsers = new WeakMap();

/**
 * The client's topic `name`, shared by every component that uses it; left when the
 * last one unmounts. Options apply when the topic is first joined.
 * @param {import('./pgcast.js').Client} client
 * @param {string} name
 * @param {import('./pgcast.js').TopicOptions} options
 */
function useTopic(client, name, options) {
  const optionsRef = useRef(options);
  optionsRef.current = options;
  const [topic, setTopic] = useState(() => client.topic(name, options));
  useEffect(() => {
    let current = topic;
    if (current.name !== name || current.state === 'closed' || current._client !== client) {
      current = client.topic(name, optionsRef.current);
      setTopic(current);
    }
    topicUsers.set(current, (topicUsers.get(current) || 0) + 1);
    return () => {
      const users = (topicUsers.get(current) || 1) - 1;
      topicUsers.set(current, users);
      if (users === 0) current.close();
    };
  }, [client, name]); // eslint-disable-line react-hooks/exhaustive-deps
  return topic;
}

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
export function usePresence(name, options = {}) {
  const { state, key } = options;
  const client = useClient(options);
  const status = useStatus(client);
  const topic = useTopic(client, name, { presence: true });
  const [error, setError] = useState(null);
  const subscribe = useCallback((onChange) => topic.on('sync', onChange), [topic]);
  const read = useCallback(() => topic.presence, [topic]);
  const presence = useSyncExternalStore(subscribe, read, read);
  const stateKey = state === undefined ? undefined : JSON.stringify(state);

  useEffect(() => topic.on('error', (e) => setError(e)), [topic]);
  useEffect(() => {
    if (stateKey === undefined) return undefined;
    topic.track(JSON.parse(stateKey), key === undefined ? {} : { key });
    return () => {
      if (topic.state !== 'closed') topic.untrack();
    };
  }, [topic, stateKey, key]);

  const track = useCallback((next) => topic.track(next, key === undefined ? {} : { key }), [topic, key]);
  const untrack = useCallback(() => topic.untrack(), [topic]);
  return { presence, track, untrack, status, error: error || client.error };
}

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
export function useBroadcast(name, onBroadcast, options = {}) {
  const client = useClient(options);
  const status = useStatus(client);
  const topic = useTopic(client, name, { presence: false, self: !!options.self, ack: !!options.ack });
  const [error, setError] = useState(null);
  const handlerRef = useRef(onBroadcast);
  handlerRef.current = onBroadcast;

  useEffect(() => {
    const offError = topic.on('error', (e) => setError(e));
    const offBroadcast = topic.on('broadcast', (event, payload) => handlerRef.current && handlerRef.current(event, payload));
    return () => {
      offError();
      offBroadcast();
    };
  }, [topic]);

  const send = useCallback((event, payload) => topic.broadcast(event, payload), [topic]);
  return { send, status, error: error || client.error };
}
