// What a caller holds: a Subscription (one table or channel stream, its resume
// position and its duplicate filter) and a Channel (raw NOTIFY listeners and
// publish). Both outlive connections and transports; the Client routes frames here.

import { PgcastError, safeCall } from './errors.js';
import { Position } from './position.js';

/** @typedef {import('./types.js').Frame} Frame */

/**
 * The change ids a subscription delivered most recently (a bounded LRU).
 *
 * A resumed subscription replays a window before its resume point, so it may get
 * ids it already delivered. Never drop by "id <= last id": ids are not commit
 * order. The LRU fails safe: an id older than the last `capacity` is delivered
 * twice, a new id is never dropped.
 */
export class RecentIds {
  /** @internal @type {Map<string, true>} */
  _ids;

  /** @param {number} [capacity] */
  constructor(capacity = 10000) {
    if (!(capacity >= 1)) throw new RangeError(`capacity must be >= 1, got ${capacity}`);
    /** @readonly */
    this.capacity = capacity;
    this._ids = new Map();
  }
  /**
   * Remember `id`; false if it was already remembered (a duplicate).
   * @param {string | number} id
   * @returns {boolean}
   */
  add(id) {
    const key = String(id);
    if (this._ids.has(key)) {
      this._ids.delete(key);
      this._ids.set(key, true);
      return false;
    }
    this._ids.set(key, true);
    if (this._ids.size > this.capacity) this._ids.delete(this._ids.keys().next().value);
    return true;
  }
  /**
   * @param {string | number} id
   * @returns {boolean}
   */
  has(id) {
    return this._ids.has(String(id));
  }
  /** @returns {number} */
  get size() {
    return this._ids.size;
  }
}

/**
 * What a table subscription asks for: `request` checked (PgcastError 'bad_request')
 * and reduced to the fields the gateway reads, `since` left out (it changes on
 * every resubscribe).
 * @param {import('./types.js').TableRequest} request
 * @returns {import('./types.js').TableRequest}
 */
export function tableRequest(request) {
  if (!request || typeof request.table !== 'string') {
    throw new PgcastError('bad_request', 'subscribe needs a table name', { hint: "client.subscribe({table: 'orders'})" });
  }
  if (request.snapshot && request.since != null) {
    throw new PgcastError('bad_request', 'snapshot and since exclude each other');
  }
  /** @type {any} */
  const clean = { table: request.table };
  for (const k of ['schema', 'filter', 'events', 'columns']) if (request[k] != null) clean[k] = request[k];
  clean.snapshot = !!request.snapshot;
  return clean;
}

/**
 * One table or channel subscription. Returned by `client.subscribe()`; the caller
 * keeps it only to `unsubscribe()`. State: 'pending' (sent or waiting to be sent),
 * 'live' (accepted), 'closed' (unsubscribed or client closed), 'failed' (refused).
 */
export class Subscription {
  /** @internal @type {import('./client.js').Client} */
  _client;
  /** @internal @type {any} a TableRequest or {channel} */
  request;
  /** @internal @type {boolean} */
  isChannel;
  /** @internal @type {string} for messages: 'public.orders', 'channel x' */
  target;
  /** @internal @type {import('./types.js').SubscriptionHandlers<any>} */
  handlers;
  /** @internal @type {string | null} */
  wireId;
  /** @internal @type {number} */
  _attempt;
  /** @internal @type {RecentIds} */
  _seen;
  /** @internal @type {Position | null} the exact position this subscription's state starts from */
  _start;
  /** @internal @type {any} the subscription's EventSource on the SSE transport */
  _source;

  /**
   * @param {import('./client.js').Client} client
   * @param {string} key
   * @param {import('./types.js').StreamRequest} request
   * @param {import('./types.js').SubscriptionHandlers<any>} handlers
   * @param {{since?: string | number | null, dedupeWindow?: number}} options
   */
  constructor(client, key, request, handlers, { since, dedupeWindow }) {
    this._client = client;
    /** Client-side id; wire ids are `id`, then `id-2`, `id-3`... per resubscribe. */
    this.id = key;
    this.request = request;
    this.isChannel = 'channel' in request;
    this.target = 'channel' in request ? `channel ${request.channel}` : `${request.schema || 'public'}.${request.table}`;
    this.handlers = handlers;
    /** @type {import('./types.js').SubscriptionState} */
    this.state = 'pending';
    /** @type {string | null} The id of the last change delivered to onChange. */
    this.lastId = null;
    /** @type {string | null} Where to resume when no change was delivered yet (since, snapshot or welcome position). */
    this.resumeFrom = since == null ? null : String(since);
    /**
     * Replayed changes dropped: their id was already delivered, or they predate
     * the snapshot (or `since` position) the subscription started from.
     */
    this.duplicates = 0;
    this.wireId = null;
    /** @type {PgcastError | null} */
    this.error = null;
    this._attempt = 0;
    this._seen = new RecentIds(dedupeWindow);
    // Changes this position holds are never delivered: its snapshot's rows (or the
    // caller's state at a `since` position) already reflect them.
    this._start = Position.parse(since);
    this._source = null;
  }

  unsubscribe() {
    this._client._unregister(this);
    if (this.state !== 'failed') this.state = 'closed';
  }

  /** @internal A fresh wire id for a (re)subscribe. */
  _nextWireId() {
    this._attempt += 1;
    this.wireId = this._attempt === 1 ? this.id : `${this.id}-${this._attempt}`;
    return this.wireId;
  }

  /** @internal @returns {string | null} where a (re)subscribe resumes */
  _since() {
    return this.isChannel ? null : (this.lastId ?? this.resumeFrom);
  }

  /**
   * @internal Route a frame of this subscription's stream.
   * @param {any} frame
   */
  _receive(frame) {
    if (frame.type === 'change') this._onChange(frame);
    else if (frame.type === 'message') this._onMessage(frame);
    else if (frame.type === 'snapshot') this._onSnapshot(frame);
    else if (frame.type === 'resync') this._onResync(frame);
    else if (frame.type === 'subscribed') this._accept(frame);
  }

  /** @internal */
  _accept(frame) {
    if (this.state === 'pending') this.state = 'live';
    if (this._start === null && frame && frame.snapshot_rows != null) this._start = Position.parse(frame.position);
    safeCall(this.handlers.onSubscribed, frame);
  }

  /** @internal */
  _onChange(frame) {
    if (this.state === 'closed' || this.state === 'failed') return;
    const id = frame.id != null ? String(frame.id) : null;
    if ((id !== null && this._seen.has(id)) || (this._start !== null && this._start.holds(frame))) {
      this.duplicates += 1;
      return;
    }
    this._acceptQuietly();
    if (id !== null) {
      this._seen.add(id);
      this.lastId = id;
    }
    safeCall(this.handlers.onChange, frame);
  }

  /** @internal */
  _onMessage(frame) {
    if (this.state === 'closed' || this.state === 'failed') return;
    this._acceptQuietly();
    safeCall(this.handlers.onMessage, frame);
  }

  /** @internal */
  _onSnapshot(frame) {
    if (this.state === 'closed' || this.state === 'failed') return;
    this._acceptQuietly();
    if (frame.done && this.lastId === null && frame.position != null) {
      // Resume from the snapshot's position on any later resubscribe; never re-snapshot.
      this.resumeFrom = String(frame.position);
      this._start = Position.parse(this.resumeFrom);
      this.request = { ...this.request, snapshot: false };
    }
    safeCall(this.handlers.onSnapshot, frame);
  }

  /** @internal */
  _onResync(frame) {
    if (this.state === 'closed' || this.state === 'failed') return;
    this._acceptQuietly();
    if (frame.position != null) {
      // The old position is gone for good: a resubscribe before the next change
      // resumes where the stream now continues, not with another resync.
      this.resumeFrom = String(frame.position);
      this._start = Position.parse(this.resumeFrom);
      this.lastId = null;
    }
    safeCall(this.handlers.onResync, frame);
    this._client._emit('resync', frame, this);
  }

  // Replayed frames may precede `subscribed`; they prove the subscribe was accepted
  // but onSubscribed waits for the real frame.
  /** @internal */
  _acceptQuietly() {
    if (this.state === 'pending') this.state = 'live';
  }

  /**
   * @internal Refused or ended for good: final.
   * @param {PgcastError} error
   */
  _fail(error) {
    if (this.state === 'closed' || this.state === 'failed') return;
    this.state = 'failed';
    this.error = error;
    safeCall(this.handlers.onError, error);
  }
}

/**
 * A raw NOTIFY channel: `.on('message', cb)` subscribes (on the first listener),
 * `.publish(payload)` sends a `publish` message (queued while offline).
 */
export class Channel {
  /** @internal @type {import('./client.js').Client} */
  _client;
  /** @internal @type {Record<string, Set<Function>>} */
  _listeners;
  /** @internal @type {Subscription | null} */
  _sub;

  /**
   * @param {import('./client.js').Client} client
   * @param {string} name
   */
  constructor(client, name) {
    this._client = client;
    this.name = name;
    this._listeners = { message: new Set(), error: new Set(), subscribed: new Set() };
    this._sub = null;
  }

  /**
   * Listen to 'message' (frame), 'error' (error) or 'subscribed' (frame). Returns an unsubscribe function.
   * @param {'message' | 'error' | 'subscribed'} event
   * @param {Function} callback
   * @returns {() => void}
   */
  on(event, callback) {
    const set = this._listeners[event];
    if (!set) throw new PgcastError('bad_event', `unknown channel event '${event}'`, { hint: 'use message, error or subscribed' });
    set.add(callback);
    if (event === 'message' && this._sub === null) this._subscribe();
    return () => this.off(event, callback);
  }

  /**
   * @param {'message' | 'error' | 'subscribed'} event
   * @param {Function} callback
   */
  off(event, callback) {
    const set = this._listeners[event];
    if (!set) return;
    set.delete(callback);
    if (event === 'message' && set.size === 0 && this._sub !== null) {
      this._sub.unsubscribe();
      this._sub = null;
    }
  }

  /** Send `{"type":"publish","channel":name,"payload":...}`; the gateway's answer (an error) reaches 'error' listeners. */
  /**
   * @param {unknown} payload a string goes as is, anything else JSON-encoded
   * @returns {string | null} the message id
   */
  publish(payload) {
    const text = typeof payload === 'string' ? payload : JSON.stringify(payload);
    return this._client._publish(this.name, text, (error) => this._emit('error', error));
  }

  /** Remove every listener and unsubscribe. */
  close() {
    for (const set of Object.values(this._listeners)) set.clear();
    if (this._sub) this._sub.unsubscribe();
    this._sub = null;
  }

  /** @internal */
  _subscribe() {
    this._sub = this._client._subscribeRequest({ channel: this.name }, {
      onMessage: (frame) => this._emit('message', frame),
      onSubscribed: (frame) => this._emit('subscribed', frame),
      onError: (error) => {
        this._sub = null;
        this._emit('error', error);
      },
    }, 'c');
  }

  /** @internal */
  _emit(event, value) {
    for (const cb of [...this._listeners[event]]) safeCall(cb, value);
  }
}
