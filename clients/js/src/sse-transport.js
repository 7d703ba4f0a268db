// The Server-Sent Events transport: one EventSource per subscription on the
// gateway's GET /sse (docs/protocol.md, "Server-Sent Events"). Events are named
// after the frame's type and carry the same JSON; `id:` lines let the EventSource
// resume with Last-Event-ID by itself. A stream closed for good is opened again
// (backoff + jitter) from the subscription's last change id; a 4xx the runtime lets
// us see refuses the subscription. It cannot carry publishes.

import { backoffDelay } from './backoff.js';
import { PgcastError } from './errors.js';
import { sseUrl } from './urls.js';

/** @typedef {import('./subscription.js').Subscription} Subscription */
/** @typedef {import('./types.js').Transport} Transport */

// 'message' (a channel's NOTIFY) is the EventSource's onmessage: not listed here.
const FRAME_EVENTS = ['snapshot', 'change', 'resync', 'subscribed', 'welcome'];
const EVENTSOURCE_OPEN = 1;
const EVENTSOURCE_CLOSED = 2;
/** @type {Record<number, string>} */
const REFUSALS = { 404: 'unknown_table', 403: 'forbidden_channel', 401: 'rejected' };

/** @implements {Transport} */
export class SseTransport {
  /** @param {import('./client.js').Client} client */
  constructor(client) {
    /** @type {'sse'} */
    this.name = 'sse';
    this.canPublish = false;
    this._client = client;
    this._EventSource = client.options.EventSource || globalThis.EventSource;
    this._active = false;
    /** @type {Set<ReturnType<typeof setTimeout>>} streams waiting to be opened again */
    this._retries = new Set();
  }

  start() {
    this._active = true;
    this._client._setStatus('connecting');
    for (const sub of this._client._subs.values()) this._open(sub);
  }

  stop() {
    this._active = false;
    for (const timer of this._retries) clearTimeout(timer);
    this._retries.clear();
    for (const sub of this._client._subs.values()) closeSource(sub);
  }

  /** @param {Subscription} sub */
  subscribe(sub) {
    this._open(sub);
  }

  /** @param {Subscription} sub */
  unsubscribe(sub) {
    if (closeSource(sub)) this._updateStatus();
  }

  send() {
    return false;
  }

  /**
   * Open `sub`'s stream, resuming from its last change id (else its resume position).
   * @param {Subscription} sub
   * @param {number} [attempt] how many opens in a row failed before this one
   */
  async _open(sub, attempt = 0) {
    const client = this._client;
    const wanted = () => this._active && !sub._source && client._subs.get(sub.id) === sub;
    if (!wanted()) return;
    if (typeof this._EventSource !== 'function') {
      client._terminate(new PgcastError('no_eventsource', 'no EventSource implementation', { hint: 'pass the EventSource option (e.g. from the eventsource package under Node)' }));
      return;
    }
    let token = client.options.token;
    if (typeof client.options.getToken === 'function') {
      const answer = await client._token();
      if (answer.error) client._reportError(answer.error);
      else token = answer.token;
      if (!wanted()) return;
    }
    sub._nextWireId();
    const source = new this._EventSource(sseUrl(client.url, sub.request, { since: sub._since(), token }));
    sub._source = source;
    let opened = false;
    source.onopen = () => {
      opened = true;
      this._updateStatus();
    };
    // A named `error` event shares its name with the EventSource's connection
    // error: only the former has data.
    const onFrame = (event) => {
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      if (!frame || typeof frame !== 'object' || sub._source !== source) return;
      this._onFrame(sub, frame, event.lastEventId);
    };
    source.onmessage = onFrame;
    for (const type of FRAME_EVENTS) source.addEventListener(type, onFrame);
    source.addEventListener('error', (event) => {
      if (typeof event.data === 'string') {
        onFrame(event);
        return;
      }
      if (sub._source !== source) return;
      // readyState 0: the EventSource reconnects by itself with Last-Event-ID.
      if (source.readyState === EVENTSOURCE_CLOSED) {
        sub._source = null;
        this._closedForGood(sub, event, opened ? 0 : attempt, opened);
      }
      this._updateStatus();
    });
  }

  /**
   * A stream closed after an HTTP error: a 4xx the runtime lets us see (the
   * eventsource package does, browsers do not) is a refusal; otherwise open it
   * again after a backoff, from the last change id.
   * @param {Subscription} sub
   * @param {any} event
   * @param {number} attempt
   * @param {boolean} opened
   */
  _closedForGood(sub, event, attempt, opened) {
    const client = this._client;
    const status = typeof event.code === 'number' ? event.code : typeof event.status === 'number' ? event.status : null;
    if (status !== null && status >= 400 && status < 500) {
      const detail = event.message ? `: ${event.message}` : '';
      client._end(sub, new PgcastError(REFUSALS[status] || 'bad_request', `subscription to ${sub.target} refused (HTTP ${status})${detail}`));
      return;
    }
    const delay = backoffDelay(attempt, client._backoffOptions, client.options.random || Math.random);
    const timer = setTimeout(() => {
      this._retries.delete(timer);
      this._open(sub, opened ? 1 : attempt + 1);
    }, delay);
    this._retries.add(timer);
  }

  /**
   * One stream per subscription: every frame on it is this subscription's.
   * @param {Subscription} sub
   * @param {any} frame
   * @param {string} lastEventId
   */
  _onFrame(sub, frame, lastEventId) {
    const client = this._client;
    const fresh = sub.resumeFrom === null && sub.lastId === null;
    if (frame.type === 'welcome') {
      if (frame.position == null) return;
      if (client.position === null) client.position = String(frame.position);
      if (fresh && !sub.request.snapshot) sub.resumeFrom = String(frame.position);
      return;
    }
    if (frame.type === 'subscribed' && lastEventId && fresh && !sub.isChannel) {
      // Over SSE the log position (welcome's on a WebSocket) is the subscribed event's id.
      sub.resumeFrom = String(lastEventId);
    }
    if (frame.type !== 'error') {
      sub._receive(frame);
    } else if (frame.code === 'unavailable') {
      // The stream ends and the EventSource resumes: not the subscription's end.
      client._reportError(new PgcastError('unavailable', `subscription to ${sub.target}: unavailable: ${frame.message || ''}`, { frame }));
    } else {
      client._unregister(sub);
      client._refuse(sub, frame);
    }
  }

  _updateStatus() {
    const client = this._client;
    if (!this._active) return;
    const sources = [...client._subs.values()].map((s) => s._source);
    if (sources.length === 0) return;
    if (sources.every((s) => s && s.readyState === EVENTSOURCE_OPEN)) client._setStatus('live');
    else if (sources.some((s) => !s || s.readyState === EVENTSOURCE_CLOSED)) client._setStatus('offline');
    else client._setStatus('connecting');
  }
}

/**
 * Close `sub`'s stream; false when it had none.
 * @param {Subscription} sub
 */
function closeSource(sub) {
  if (!sub._source) return false;
  sub._source.close();
  sub._source = null;
  return true;
}
