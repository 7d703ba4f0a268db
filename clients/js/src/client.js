// The Client: one resumable connection model for every transport (the same rules
// as the Python client, src/pgcast/client/). It owns the subscriptions (their
// resume positions and duplicate filters live in subscription.js), the bounded
// outbox, the status, events and errors, and the choice of transport: WebSocket,
// or Server-Sent Events from the start (`transport: 'sse'`, or no WebSocket at all)
// or after `sseAfterFailures` WebSocket handshakes failed in a row. A transport
// (websocket-transport.js, sse-transport.js) only opens streams and moves frames;
// it reports back through the methods marked "transport" below.

import { DEFAULT_BACKOFF, checkBackoff } from './backoff.js';
import { PgcastError, describe, safeCall } from './errors.js';
import { watchTable } from './mirror.js';
import { SseTransport } from './sse-transport.js';
import { Channel, Subscription } from './subscription.js';
import { normalizeUrl } from './urls.js';
import { WebSocketTransport } from './websocket-transport.js';

/** @typedef {import('./types.js').Row} Row */
/** @typedef {import('./types.js').Status} Status */

const DEFAULTS = {
  heartbeatMs: 20000,
  heartbeatTimeoutMs: 10000,
  openTimeoutMs: 10000,
  pauseWhenHidden: false,
  transport: 'auto',
  sseAfterFailures: 3,
  queueSize: 1000,
  dedupeWindow: 10000,
};

const TRANSPORT_OPTIONS = ['auto', 'websocket', 'sse'];

/** @param {{WebSocket?: unknown}} options */
const webSocketAvailable = (options) => typeof (options.WebSocket || globalThis.WebSocket) === 'function';

/** @param {string} id */
const notOverSse = (id) => new PgcastError('not_supported', 'publish needs a WebSocket connection; this client fell back to SSE', { id });

/**
 * A gateway connection that reconnects and resumes by itself. Use `createClient`
 * (or `getClient` to share one per URL). It connects at once.
 */
export class Client {
  /** @param {import('./types.js').ClientOptions} [options] */
  constructor(options = {}) {
    const o = { ...DEFAULTS, ...options };
    /** The normalized WebSocket URL. */
    this.url = normalizeUrl(o.url);
    /** @internal @type {any} */
    this.options = o;
    /** @internal */
    this._backoffOptions = { ...DEFAULT_BACKOFF, ...(o.backoff || {}) };
    checkBackoff(this._backoffOptions);
    if (!TRANSPORT_OPTIONS.includes(o.transport)) {
      throw new PgcastError('bad_option', `unknown transport '${o.transport}'`, { hint: "use 'auto', 'websocket' or 'sse'" });
    }
    /** @type {Status} */
    this.status = 'connecting';
    /** @type {string | null} The change-log position announced by the first `welcome`. */
    this.position = null;
    /** @type {PgcastError | null} The error that closed the client (a 4500-4999 close), else null. */
    this.error = null;
    /** @internal @type {Map<string, Set<Function>>} */
    this._listeners = new Map();
    /** @internal @type {Map<string, Subscription>} key -> subscription */
    this._subs = new Map();
    /** @internal @type {Map<string, Function>} publish id -> onError */
    this._pendingPublishes = new Map();
    /** @internal @type {{frame: any, onError: Function}[]} messages queued while offline */
    this._outbox = [];
    /** @internal */
    this._counter = 0;
    /** @internal */
    this._closed = false;
    /** @internal */
    this._paused = false;
    /** @internal @type {import('./types.js').Transport} */
    this._transport = o.transport === 'sse' || (o.transport === 'auto' && !webSocketAvailable(o) && this._sseAvailable())
      ? new SseTransport(this)
      : new WebSocketTransport(this);
    /** @internal @type {any} */
    this._document = o.document !== undefined ? o.document : globalThis.document;
    /** @internal @type {(() => void) | undefined} */
    this._onVisibility = undefined;
    if (o.pauseWhenHidden && this._document && typeof this._document.addEventListener === 'function') {
      this._onVisibility = () => (this._document.hidden ? this._pause() : this._resume());
      this._document.addEventListener('visibilitychange', this._onVisibility);
      this._paused = !!this._document.hidden;
    }
    if (this._paused) this._setStatus('offline');
    else this._transport.start();
  }

  /** @returns {import('./types.js').TransportName} 'websocket' or 'sse' (after the fallback, or with transport: 'sse'). */
  get transport() {
    return this._transport.name;
  }

  /**
   * Listen to 'status' (status), 'resync' (frame, subscription) or 'error' (error). Returns an unsubscribe function.
   * @param {'status' | 'resync' | 'error'} event
   * @param {Function} callback
   * @returns {() => void}
   */
  on(event, callback) {
    if (!this._listeners.has(event)) this._listeners.set(event, new Set());
    this._listeners.get(event).add(callback);
    return () => this.off(event, callback);
  }

  /**
   * @param {'status' | 'resync' | 'error'} event
   * @param {Function} callback
   */
  off(event, callback) {
    const set = this._listeners.get(event);
    if (set) set.delete(callback);
  }

  /**
   * Subscribe to a table: `{table, schema, filter, events, columns, snapshot, since}`.
   * @template {Row} [R=Row]
   * @param {import('./types.js').TableRequest} request
   * @param {import('./types.js').SubscriptionHandlers<R>} [handlers]
   * @returns {Subscription}
   */
  subscribe(request, handlers = {}) {
    if (!request || typeof request.table !== 'string') {
      throw new PgcastError('bad_request', 'subscribe needs a table name', { hint: "client.subscribe({table: 'orders'})" });
    }
    if (request.snapshot && request.since != null) {
      throw new PgcastError('bad_request', 'snapshot and since exclude each other');
    }
    const { since, ...rest } = request;
    /** @type {Record<string, unknown>} */
    const clean = { table: rest.table };
    for (const k of ['schema', 'filter', 'events', 'columns']) if (rest[k] != null) clean[k] = rest[k];
    clean.snapshot = !!rest.snapshot;
    return this._subscribeRequest(/** @type {any} */ (clean), handlers, 's', since);
  }

  /**
   * A live mirror: snapshot + changes by key, filter exits removed, re-snapshot on
   * resync (see watchTable in mirror.js). Throws FilterError.
   * @template {Row} [R=Row]
   * @param {import('./types.js').WatchTableRequest<R>} request
   * @param {import('./types.js').WatchTableHandlers<R>} [handlers]
   * @returns {import('./types.js').TableWatch<R>}
   */
  watchTable(request, handlers = {}) {
    return watchTable(this, request, handlers);
  }

  /**
   * A raw NOTIFY channel.
   * @param {string} name
   * @returns {Channel}
   */
  channel(name) {
    return new Channel(this, name);
  }

  /** Close the connection and end every subscription. Final. */
  close() {
    if (this._closed) return;
    this._closed = true;
    this._transport.stop(1000, 'client closed');
    this._forget();
    for (const sub of this._subs.values()) if (sub.state !== 'failed') sub.state = 'closed';
    this._subs.clear();
    this._outbox = [];
    this._setStatus('closed');
  }

  // -- events

  /** @internal */
  _emit(event, ...args) {
    const set = this._listeners.get(event);
    if (set) for (const cb of [...set]) safeCall(cb, ...args);
  }

  /** @internal (transport) @param {Status} status */
  _setStatus(status) {
    if (this.status === status || this.status === 'closed') return;
    this.status = status;
    this._emit('status', status);
  }

  /** @internal (transport) @param {PgcastError} error */
  _reportError(error) {
    this._emit('error', error);
  }

  // -- subscriptions and the outbox

  /** @internal */
  _subscribeRequest(request, handlers, prefix, since) {
    this._counter += 1;
    const sub = new Subscription(this, `${prefix}${this._counter}`, request, handlers, {
      since,
      dedupeWindow: this.options.dedupeWindow,
    });
    if (this._closed) {
      const error = this.error || new PgcastError('closed', 'the client is closed');
      queueMicrotask(() => sub._fail(error));
      return sub;
    }
    this._subs.set(sub.id, sub);
    this._transport.subscribe(sub);
    return sub;
  }

  /** @internal @param {Subscription} sub */
  _unregister(sub) {
    this._subs.delete(sub.id);
    this._transport.unsubscribe(sub);
  }

  /** @internal */
  _publish(channel, payload, onError) {
    if (this._closed) {
      const error = this.error || new PgcastError('closed', 'the client is closed');
      queueMicrotask(() => onError(error));
      return null;
    }
    this._counter += 1;
    const id = `p${this._counter}`;
    if (!this._transport.canPublish) {
      const error = notOverSse(id);
      queueMicrotask(() => {
        onError(error);
        this._reportError(error);
      });
      return id;
    }
    this._pendingPublishes.set(id, onError);
    if (this._pendingPublishes.size > this.options.queueSize) {
      this._pendingPublishes.delete(this._pendingPublishes.keys().next().value);
    }
    this._send({ type: 'publish', id, channel, payload }, onError);
    return id;
  }

  // Send now if live, else queue (bounded: the oldest queued message is dropped and reported).
  /** @internal */
  _send(frame, onError) {
    // A socket that is closing while we still say 'live' refuses the send: queue it then.
    if (this.status === 'live' && this._transport.send(frame)) return;
    this._outbox.push({ frame, onError });
    if (this._outbox.length > this.options.queueSize) {
      const dropped = this._outbox.shift();
      const error = new PgcastError('queue_full', `outgoing queue full (${this.options.queueSize} messages while offline): dropped a ${dropped.frame.type}`, {
        id: dropped.frame.id,
        hint: 'raise the queueSize option or send less while offline',
      });
      this._pendingPublishes.delete(dropped.frame.id);
      safeCall(dropped.onError, error);
      this._reportError(error);
    }
  }

  // -- what transports report

  /** @internal (transport) The answer of getToken, or the PgcastError it became. */
  async _token() {
    try {
      return { token: await this.options.getToken(), error: null };
    } catch (err) {
      return { token: undefined, error: new PgcastError('token', `getToken failed: ${describe(err)}`) };
    }
  }

  /**
   * @internal (transport) A connection is up at log `position`: resubscribe every
   * subscription (each from its own resume point) and flush the outbox.
   * @param {string | null} position
   */
  _connected(position) {
    if (this.position === null) this.position = position;
    this._setStatus('live');
    for (const sub of [...this._subs.values()]) {
      if (sub.state === 'pending' || sub.state === 'live') this._transport.subscribe(sub);
    }
    const queued = this._outbox;
    this._outbox = [];
    for (const { frame } of queued) this._transport.send(frame);
  }

  /**
   * @internal (transport) The gateway refused `sub` with an `error` frame: it fails and is not retried.
   * @param {Subscription} sub
   * @param {import('./types.js').ErrorFrame} frame
   */
  _refuse(sub, frame) {
    const code = String(frame.code || 'error');
    const id = frame.id == null ? undefined : String(frame.id);
    this._end(sub, new PgcastError(code, `subscription to ${sub.target} refused: ${code}: ${frame.message || ''}`, { id, frame }));
  }

  /**
   * @internal (transport) `sub` ends with `error`, reported to 'error' listeners too unless `report` is false.
   * @param {Subscription} sub
   * @param {PgcastError} error
   */
  _end(sub, error, report = true) {
    this._subs.delete(sub.id);
    sub._fail(error);
    if (report) this._reportError(error);
  }

  /**
   * @internal (transport) An `error` frame of no subscription: a publish's answer, or the connection's.
   * @param {import('./types.js').ErrorFrame} frame
   */
  _onErrorFrame(frame) {
    const code = String(frame.code || 'error');
    const id = frame.id == null ? undefined : String(frame.id);
    const error = new PgcastError(code, String(frame.message || '') || code, { id, frame });
    const onPublishError = id === undefined ? undefined : this._pendingPublishes.get(id);
    if (onPublishError) {
      this._pendingPublishes.delete(id);
      safeCall(onPublishError, error);
    }
    this._reportError(error);
  }

  /**
   * @internal (transport) WebSocket handshakes failed `failures` times in a row:
   * true when the client moved to Server-Sent Events instead of retrying.
   * @param {number} failures
   */
  _handshakeFailed(failures) {
    if (this.options.transport !== 'auto' || !this._sseAvailable() || failures < this.options.sseAfterFailures) return false;
    this._transport.stop(1000, 'switching to SSE');
    this._reportError(new PgcastError('sse_fallback', `WebSocket failed ${failures} times at the handshake; using Server-Sent Events`));
    this._transport = new SseTransport(this);
    this._transport.start();
    const queued = this._outbox;
    this._outbox = [];
    for (const { frame, onError } of queued) {
      this._pendingPublishes.delete(frame.id);
      safeCall(onError, notOverSse(frame.id));
    }
    return true;
  }

  /** @internal (transport) The gateway refused the client: close it, fail everything with `error`. */
  _terminate(error) {
    this.error = error;
    this._closed = true;
    this._transport.stop();
    const subs = [...this._subs.values()];
    this._subs.clear();
    const queued = this._outbox;
    this._outbox = [];
    this._forget();
    this._setStatus('closed');
    for (const sub of subs) sub._fail(error);
    for (const { onError } of queued) safeCall(onError, error);
    for (const onError of this._pendingPublishes.values()) safeCall(onError, error);
    this._pendingPublishes.clear();
    this._reportError(error);
  }

  // -- page visibility and the shared registry

  /** @internal */
  _sseAvailable() {
    return typeof (this.options.EventSource || globalThis.EventSource) === 'function';
  }

  /** @internal */
  _pause() {
    if (this._closed || this._paused) return;
    this._paused = true;
    this._transport.stop(1000, 'page hidden');
    this._setStatus('offline');
  }

  /** @internal */
  _resume() {
    if (this._closed || !this._paused) return;
    this._paused = false;
    this._transport.start();
  }

  /** @internal Closed for good: no more visibility events, no longer the shared client of its URL. */
  _forget() {
    if (this._onVisibility) this._document.removeEventListener('visibilitychange', this._onVisibility);
    if (registry.get(this.url) === this) registry.delete(this.url);
  }
}

/** @type {Map<string, Client>} */
const registry = new Map();

/**
 * A new client for `options.url` (see the README for every option).
 * @param {import('./types.js').ClientOptions} [options]
 * @returns {Client}
 */
export function createClient(options = {}) {
  return new Client(options);
}

/**
 * The shared client for `url`: the same instance for the same (normalized) URL
 * until it is closed. `options` apply only when it is created.
 * @param {string | null} [url]
 * @param {Omit<import('./types.js').ClientOptions, 'url'>} [options]
 * @returns {Client}
 */
export function getClient(url, options = {}) {
  const key = normalizeUrl(url);
  let client = registry.get(key);
  if (!client) {
    client = new Client({ ...options, url });
    registry.set(key, client);
  }
  return client;
}

/** Close every shared client (tests, or a single-page app's logout). */
export function closeAllClients() {
  for (const client of [...registry.values()]) client.close();
  registry.clear();
}
