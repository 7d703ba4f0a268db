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
import { Channel, Subscription, tableRequest } from './subscription.js';
import { Outbox } from './outbox.js';
import { Topic } from './topic.js';
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

/** @param {string | undefined} id */
const notOverSse = (id) => new PgcastError('not_supported', 'publish needs a WebSocket connection; this client fell back to SSE', { id });

/**
 * A gateway connection that reconnects and resumes by itself. Use `createClient`
 * (or `getClient` to share one per URL). It connects at once.
 */
export class Client {
  /** @internal @type {any} */
  options;
  /** @internal @type {Required<import('./types.js').BackoffOptions>} */
  _backoffOptions;
  /** @internal @type {Map<string, Set<Function>>} */
  _listeners;
  /** @internal @type {Map<string, Subscription>} key -> subscription */
  _subs;
  /** @internal @type {Outbox} */
  _outbox;
  /** @internal @type {number} */
  _counter;
  /** @internal @type {boolean} */
  _closed;
  /** @internal @type {boolean} */
  _paused;
  /** @internal @type {import('./types.js').Transport} */
  _transport;
  /** @internal @type {() => void} stops watching the page's visibility */
  _unwatch;
  /** @internal @type {Map<string, Topic>} joined topics by name */
  _topics;

  /** @param {import('./types.js').ClientOptions} [options] */
  constructor(options = {}) {
    const o = { ...DEFAULTS, ...options };
    /** The normalized WebSocket URL. */
    this.url = normalizeUrl(o.url);
    this.options = o;
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
    this._listeners = new Map();
    this._subs = new Map();
    this._topics = new Map();
    this._outbox = new Outbox(o.queueSize, (error) => this._reportError(error));
    this._counter = 0;
    this._closed = false;
    this._paused = false;
    this._transport = o.transport === 'sse' || (o.transport === 'auto' && !webSocketAvailable(o) && this._sseAvailable())
      ? new SseTransport(this)
      : new WebSocketTransport(this);
    this._unwatch = () => {};
    const doc = o.document !== undefined ? o.document : globalThis.document;
    if (o.pauseWhenHidden && doc && typeof doc.addEventListener === 'function') {
      const onVisibility = () => (doc.hidden ? this._pause() : this._resume());
      doc.addEventListener('visibilitychange', onVisibility);
      this._unwatch = () => doc.removeEventListener('visibilitychange', onVisibility);
      this._paused = !!doc.hidden;
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
    let set = this._listeners.get(event);
    if (!set) this._listeners.set(event, (set = new Set()));
    set.add(callback);
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
    return this._subscribeRequest(tableRequest(request), handlers, 's', request.since);
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

  /**
   * Join a presence and broadcast topic (the same Topic for the same name until it
   * is closed). Needs a WebSocket: over SSE its 'error' listeners get `not_supported`.
   * @param {string} name
   * @param {import('./types.js').TopicOptions} [options] apply when the topic is first joined
   * @returns {Topic}
   */
  topic(name, options = {}) {
    const existing = this._topics.get(name);
    if (existing) return existing;
    const topic = new Topic(this, name, options);
    if (this._closed) {
      topic.state = 'closed';
      return topic;
    }
    this._topics.set(name, topic);
    if (!this._transport.canPublish) {
      queueMicrotask(() => topic._emit('error', new PgcastError('not_supported', 'presence and broadcast need a WebSocket connection; this client uses SSE')));
    } else if (this.status === 'live') {
      topic._rejoin();
    }
    return topic;
  }

  /** @internal @param {Topic} topic */
  _forgetTopic(topic) {
    if (this._topics.get(topic.name) === topic) this._topics.delete(topic.name);
  }

  /** @internal (transport) A frame of a topic (`topic` field). */
  _topicFrame(frame) {
    const topic = this._topics.get(String(frame.topic));
    if (topic) topic._receive(frame);
    else if (frame.type === 'error') this._onErrorFrame(frame);
  }

  /** Close the connection and end every subscription. Final. */
  close() {
    if (this._closed) return;
    this._closed = true;
    for (const topic of this._topics.values()) {
      topic._disconnected();
      topic.state = 'closed';
    }
    this._topics.clear();
    this._transport.stop(1000, 'client closed');
    this._forget();
    for (const sub of this._subs.values()) if (sub.state !== 'failed') sub.state = 'closed';
    this._subs.clear();
    this._outbox.drain();
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
    if (status !== 'live') for (const topic of this._topics.values()) topic._disconnected();
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
      queueMicrotask(() => sub._fail(this._closedError()));
      return sub;
    }
    this._subs.set(sub.id, sub);
    this._transport.subscribe(sub);
    return sub;
  }

  /** @internal Why a closed client refuses: the gateway's refusal, else `closed`. */
  _closedError() {
    return this.error || new PgcastError('closed', 'the client is closed');
  }

  /** @internal @param {Subscription} sub */
  _unregister(sub) {
    this._subs.delete(sub.id);
    this._transport.unsubscribe(sub);
  }

  /** @internal */
  _publish(channel, payload, onError) {
    if (this._closed) {
      queueMicrotask(() => onError(this._closedError()));
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
    this._outbox.await(id, onError);
    const frame = { type: 'publish', id, channel, payload };
    // Send now if live, else queue. A socket that is closing while we still say
    // 'live' refuses the send: queue it then.
    if (!(this.status === 'live' && this._transport.send(frame))) this._outbox.push(frame, onError);
    return id;
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
    for (const { frame } of this._outbox.drain()) this._transport.send(frame);
    if (this._transport.canPublish) for (const topic of this._topics.values()) topic._rejoin();
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
    safeCall(this._outbox.answered(id), error);
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
    this._outbox.fail((frame) => notOverSse(frame.id));
    return true;
  }

  /** @internal (transport) The gateway refused the client: close it, fail everything with `error`. */
  _terminate(error) {
    this.error = error;
    this._closed = true;
    this._transport.stop();
    const subs = [...this._subs.values()];
    this._subs.clear();
    this._forget();
    this._setStatus('closed');
    for (const topic of this._topics.values()) {
      topic.state = 'closed';
      topic._emit('error', error);
    }
    this._topics.clear();
    for (const sub of subs) sub._fail(error);
    this._outbox.fail(error, true);
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
    this._unwatch();
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
