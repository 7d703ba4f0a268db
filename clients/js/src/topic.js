// Topic: presence and broadcast on one topic of the gateway (docs/protocol.md,
// "Presence and broadcast"). Nothing is stored on the server: a topic lives while
// clients are joined. The client joins when the Topic is made, re-joins after every
// reconnect and re-tracks the last state it tracked, so presence survives a
// gateway restart; broadcasts sent while offline fail (they are ephemeral: a
// cursor position from ten seconds ago is noise).

import { PgcastError, safeCall } from './errors.js';

/** @typedef {import('./types.js').PresenceState} PresenceState */
/** @typedef {import('./types.js').PresenceMeta} PresenceMeta */

const EVENTS = ['sync', 'join', 'leave', 'broadcast', 'error', 'joined'];

/**
 * Apply a `presence_diff` to `state` (Phoenix's shape: key -> {metas}); a new object.
 * @param {PresenceState} state
 * @param {PresenceState} joins
 * @param {PresenceState} leaves
 * @returns {PresenceState}
 */
export function applyPresenceDiff(state, joins, leaves) {
  /** @type {PresenceState} */
  const next = {};
  for (const [key, value] of Object.entries(state)) next[key] = { metas: [...value.metas] };
  for (const [key, value] of Object.entries(leaves || {})) {
    const current = next[key];
    if (!current) continue;
    const gone = new Set(value.metas.map((m) => m.phx_ref));
    current.metas = current.metas.filter((m) => !gone.has(m.phx_ref));
    if (current.metas.length === 0) delete next[key];
  }
  for (const [key, value] of Object.entries(joins || {})) {
    const current = next[key] || (next[key] = { metas: [] });
    const known = new Set(current.metas.map((m) => m.phx_ref));
    for (const meta of value.metas) if (!known.has(meta.phx_ref)) current.metas.push(meta);
  }
  return next;
}

/**
 * One joined topic. Make it with `client.topic(name, options)`.
 */
export class Topic {
  /** @internal @type {import('./client.js').Client} */
  _client;
  /** @internal @type {Record<string, Set<Function>>} */
  _listeners;
  /** @internal @type {{key?: string, state: Record<string, unknown>} | null} the last track, re-sent on rejoin */
  _tracked;
  /** @internal @type {Map<string, {resolve: Function, reject: Function}>} broadcasts awaiting their ack */
  _acks;
  /** @internal @type {number} */
  _refs;

  /**
   * @param {import('./client.js').Client} client
   * @param {string} name
   * @param {import('./types.js').TopicOptions} [options]
   */
  constructor(client, name, options = {}) {
    this._client = client;
    this.name = name;
    /** @type {Required<import('./types.js').TopicOptions>} */
    this.options = { presence: true, self: false, ack: false, ...options };
    /** @type {PresenceState} The presence of the topic on every gateway node. */
    this.presence = {};
    /** @type {'joining' | 'joined' | 'closed'} */
    this.state = 'joining';
    /** @type {{track: boolean, broadcast: boolean}} What the token may do here (from `joined`). */
    this.rights = { track: false, broadcast: false };
    this._listeners = Object.fromEntries(EVENTS.map((e) => [e, new Set()]));
    this._tracked = null;
    this._acks = new Map();
    this._refs = 0;
  }

  /**
   * Listen to 'sync' (presence), 'join' (key, metas), 'leave' (key, metas),
   * 'broadcast' (event, payload), 'joined' (frame) or 'error' (error). Returns an
   * unsubscribe function.
   * @param {'sync' | 'join' | 'leave' | 'broadcast' | 'joined' | 'error'} event
   * @param {Function} callback
   * @returns {() => void}
   */
  on(event, callback) {
    const set = this._listeners[event];
    if (!set) throw new PgcastError('bad_event', `unknown topic event '${event}'`, { hint: EVENTS.join(', ') });
    set.add(callback);
    return () => set.delete(callback);
  }

  /**
   * Track `state` (a JSON object) under `key` (default: the token's subject, else an
   * id of this connection); replaces what this client tracked here. Kept and
   * re-sent after a reconnect.
   * @param {Record<string, unknown>} state
   * @param {{key?: string}} [options]
   */
  track(state, options = {}) {
    if (state === null || typeof state !== 'object' || Array.isArray(state)) {
      throw new PgcastError('bad_request', 'presence state must be a plain object');
    }
    this._tracked = { key: options.key, state };
    this._send(this._trackFrame());
  }

  /** Stop tracking on this topic. */
  untrack() {
    this._tracked = null;
    this._send({ type: 'untrack', topic: this.name });
  }

  /**
   * Send `event` with `payload` to every member of the topic. Resolves when sent
   * (with `ack: true`: when the gateway acknowledged it); rejects with a
   * PgcastError when offline or refused.
   * @param {string} event
   * @param {unknown} payload
   * @returns {Promise<void>}
   */
  broadcast(event, payload) {
    if (this.state === 'closed') return Promise.reject(new PgcastError('closed', `topic ${this.name} is closed`));
    if (this._client.status !== 'live' || this.state !== 'joined') {
      return Promise.reject(new PgcastError('offline', 'not connected or not joined yet: the broadcast was not sent'));
    }
    this._refs += 1;
    const ref = `b${this._refs}`;
    const frame = { type: 'broadcast', topic: this.name, event, payload: payload === undefined ? null : payload, ref };
    return new Promise((resolve, reject) => {
      if (this.options.ack) this._acks.set(ref, { resolve, reject });
      if (!this._client._transport.send(frame)) {
        this._acks.delete(ref);
        reject(new PgcastError('offline', 'not connected: the broadcast was not sent'));
      } else if (!this.options.ack) {
        resolve();
      }
    });
  }

  /** Leave the topic (this client's presence on it leaves too). Final. */
  close() {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this._send({ type: 'leave', topic: this.name });
    this._failAcks(new PgcastError('closed', `topic ${this.name} is closed`));
    for (const set of Object.values(this._listeners)) set.clear();
    this._client._forgetTopic(this);
  }

  // -- what the client calls

  /** @internal The connection is (again) live: join, re-track. */
  _rejoin() {
    if (this.state === 'closed') return;
    this.state = 'joining';
    const { presence, self, ack } = this.options;
    this._client._transport.send({ type: 'join', topic: this.name, presence, self, ack });
    if (this._tracked) this._client._transport.send(this._trackFrame());
  }

  /** @internal The connection dropped: acks will never come. */
  _disconnected() {
    if (this.state !== 'closed') this.state = 'joining';
    this._failAcks(new PgcastError('offline', 'the connection dropped before the broadcast was acknowledged'));
  }

  /** @internal (transport) A frame for this topic. */
  _receive(frame) {
    if (this.state === 'closed') return;
    switch (frame.type) {
      case 'joined':
        this.state = 'joined';
        this.rights = { track: !!frame.track, broadcast: !!frame.broadcast };
        this._emit('joined', frame);
        break;
      case 'presence_state': {
        const before = this.presence;
        this.presence = frame.state || {};
        for (const key of Object.keys(before)) if (!this.presence[key]) this._emit('leave', key, before[key].metas);
        for (const key of Object.keys(this.presence)) if (!before[key]) this._emit('join', key, this.presence[key].metas);
        this._emit('sync', this.presence);
        break;
      }
      case 'presence_diff':
        this.presence = applyPresenceDiff(this.presence, frame.joins, frame.leaves);
        for (const [key, value] of Object.entries(frame.leaves || {})) this._emit('leave', key, value.metas);
        for (const [key, value] of Object.entries(frame.joins || {})) this._emit('join', key, value.metas);
        this._emit('sync', this.presence);
        break;
      case 'broadcast':
        this._emit('broadcast', frame.event, frame.payload);
        break;
      case 'ack': {
        const waiter = this._acks.get(String(frame.ref));
        this._acks.delete(String(frame.ref));
        if (waiter) waiter.resolve();
        break;
      }
      case 'error': {
        const error = new PgcastError(String(frame.code || 'error'), String(frame.message || ''), { frame });
        const waiter = frame.ref == null ? undefined : this._acks.get(String(frame.ref));
        if (waiter) {
          this._acks.delete(String(frame.ref));
          waiter.reject(error);
        }
        this._emit('error', error);
        break;
      }
      default:
    }
  }

  // -- internals

  /** @internal */
  _trackFrame() {
    const tracked = /** @type {{key?: string, state: Record<string, unknown>}} */ (this._tracked);
    /** @type {Record<string, unknown>} */
    const frame = { type: 'track', topic: this.name, state: tracked.state };
    if (tracked.key !== undefined) frame.key = tracked.key;
    return frame;
  }

  /** @internal Send now if live; otherwise the rejoin on reconnect carries the state. */
  _send(frame) {
    if (this._client.status === 'live') this._client._transport.send(frame);
  }

  /** @internal */
  _failAcks(error) {
    const waiters = [...this._acks.values()];
    this._acks.clear();
    for (const waiter of waiters) waiter.reject(error);
  }

  /** @internal */
  _emit(event, ...args) {
    for (const cb of [...this._listeners[event]]) safeCall(cb, ...args);
  }
}
