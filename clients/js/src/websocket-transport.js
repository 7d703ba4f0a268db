// The WebSocket transport: one connection at a time to the gateway's /ws, opened
// again with backoff + jitter after it ends. It waits for `welcome` (the connection's
// log position), lets the client resubscribe and flush its outbox, heartbeats, and
// turns how a connection ended into the client's decisions: refused for good
// (4500-4999, HTTP 401/403), one subscribe too big (1009), or a handshake failure
// (counted: the client may fall back to Server-Sent Events).

import { CLOSE_MEANINGS, backoff, closeAction } from './backoff.js';
import { PgcastError, describe } from './errors.js';
import { withToken } from './urls.js';

/** @typedef {import('./subscription.js').Subscription} Subscription */
/** @typedef {import('./types.js').Transport} Transport */

/**
 * @typedef {object} Connection
 * @property {any} ws
 * @property {boolean} opened the handshake succeeded
 * @property {boolean} welcomed the gateway sent `welcome`
 * @property {number | null} httpStatus the refused upgrade's status, where the runtime tells it
 */

const WS_OPEN = 1;
const TOPIC_FRAMES = new Set(['joined', 'left', 'presence_state', 'presence_diff', 'broadcast', 'ack', 'error']);

function noop() {}

/**
 * The `subscribe` message for `request` under `wireId`, resuming after `since`.
 * @param {string} wireId
 * @param {any} request a TableRequest or {channel}
 * @param {string | null} since
 */
export function subscribeFrame(wireId, request, since) {
  /** @type {Record<string, unknown>} */
  const frame = { type: 'subscribe', id: wireId };
  if (request.channel !== undefined) {
    frame.channel = request.channel;
    return frame;
  }
  frame.table = request.table;
  if (request.schema != null) frame.schema = request.schema;
  if (request.events != null) frame.events = request.events.map((e) => String(e).toUpperCase());
  if (request.filter != null) frame.filter = request.filter;
  if (request.columns != null) frame.columns = [...request.columns];
  if (since != null) frame.since = since;
  else if (request.snapshot) frame.snapshot = true;
  return frame;
}

/** @implements {Transport} */
export class WebSocketTransport {
  /** @param {import('./client.js').Client} client */
  constructor(client) {
    /** @type {'websocket'} */
    this.name = 'websocket';
    this.canPublish = true;
    this._client = client;
    this._WebSocket = client.options.WebSocket || globalThis.WebSocket;
    /** @type {any} the current socket */
    this._ws = null;
    /** @type {Map<string, Subscription>} wire id -> subscription, on the current connection */
    this._byWire = new Map();
    /** @type {string | null} the current connection's `welcome` position */
    this._connectionPosition = null;
    /** @type {Iterator<number> | null} */
    this._delays = null;
    this._reconnectTimer = undefined;
    this._openTimer = undefined;
    this._pingTimer = undefined;
    this._pongTimer = undefined;
    this._activity = false;
    this._handshakeFailures = 0;
    this._connectSeq = 0;
    this._active = false;
  }

  start() {
    this._active = true;
    this._delays = null;
    this._connect();
  }

  stop(code = 1000, reason = 'client closed') {
    this._active = false;
    this._connectSeq += 1; // a pending getToken() must not open a socket
    clearTimeout(this._reconnectTimer);
    this._drop(code, reason);
    this._byWire.clear();
  }

  /** @param {Subscription} sub */
  subscribe(sub) {
    // Otherwise the next welcome sends it.
    if (this._client.status === 'live' && this._ws) this._sendSubscribe(sub);
  }

  /** @param {Subscription} sub */
  unsubscribe(sub) {
    const wireId = sub.wireId;
    if (wireId === null || this._byWire.get(wireId) !== sub) return;
    this._byWire.delete(wireId);
    if (this._client.status === 'live') this.send({ type: 'unsubscribe', id: wireId });
  }

  /** @param {object} frame */
  send(frame) {
    const ws = this._ws;
    if (!ws || ws.readyState !== WS_OPEN) return false;
    try {
      ws.send(JSON.stringify(frame));
      return true;
    } catch {
      return false; // the connection is going away; its close resends what is needed
    }
  }

  /** @param {Subscription} sub */
  _sendSubscribe(sub) {
    const wireId = sub._nextWireId();
    const frame = subscribeFrame(wireId, sub.request, sub._since());
    if (!sub.isChannel && sub.resumeFrom === null && sub.lastId === null && !sub.request.snapshot) {
      // Sent live (no since): if we reconnect before its first change, resume
      // from this connection's position so nothing committed meanwhile is skipped.
      sub.resumeFrom = this._connectionPosition;
    }
    this._byWire.set(wireId, sub);
    this.send(frame);
  }

  async _connect() {
    if (!this._active) return;
    const client = this._client;
    const seq = ++this._connectSeq;
    client._setStatus('connecting');
    let token = client.options.token;
    if (typeof client.options.getToken === 'function') {
      const answer = await client._token();
      if (seq !== this._connectSeq || !this._active) return;
      if (answer.error) {
        client._reportError(answer.error);
        this._scheduleReconnect();
        return;
      }
      token = answer.token;
    }
    const WebSocketImpl = this._WebSocket;
    if (typeof WebSocketImpl !== 'function') {
      client._terminate(new PgcastError('no_websocket', 'no WebSocket implementation', { hint: 'pass the WebSocket option (e.g. from the ws package under Node)' }));
      return;
    }
    let ws;
    try {
      ws = new WebSocketImpl(withToken(client.url, token));
    } catch (err) {
      client._reportError(new PgcastError('connect', `cannot open ${client.url}: ${describe(err)}`));
      this._scheduleReconnect();
      return;
    }
    /** @type {Connection} */
    const conn = { ws, opened: false, welcomed: false, httpStatus: null };
    this._ws = ws;
    ws.onopen = () => {
      conn.opened = true;
    };
    ws.onerror = (event) => {
      // Browsers tell nothing; the ws package says "Unexpected server response: 401".
      const m = /Unexpected server response: (\d+)/.exec(String((event && (event.message || (event.error && event.error.message))) || ''));
      if (m) conn.httpStatus = Number(m[1]);
    };
    ws.onmessage = (event) => this._onFrame(conn, event.data);
    ws.onclose = (event) => {
      if (this._ws !== ws) return;
      this._ended(conn, event.code, event.reason || '');
    };
    this._openTimer = setTimeout(() => {
      if (this._ws === ws && !conn.welcomed) {
        this._drop();
        this._ended(conn, null, 'no welcome within openTimeoutMs');
      }
    }, client.options.openTimeoutMs);
  }

  /**
   * @param {Connection} conn
   * @param {unknown} data
   */
  _onFrame(conn, data) {
    if (this._ws !== conn.ws) return;
    this._activity = true;
    if (typeof data !== 'string') return; // the protocol is text frames only
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (frame === null || typeof frame !== 'object' || Array.isArray(frame)) return;
    if (!conn.welcomed) {
      if (frame.type !== 'welcome') return;
      conn.welcomed = true;
      this._onWelcome(frame);
      return;
    }
    const kind = frame.type;
    if (typeof frame.topic === 'string' && TOPIC_FRAMES.has(kind)) {
      this._client._topicFrame(frame);
      return;
    }
    if (kind === 'change' || kind === 'message' || kind === 'resync' || kind === 'snapshot' || kind === 'subscribed') {
      // For a subscription already unsubscribed: nothing to do.
      const sub = this._byWire.get(String(kind === 'subscribed' ? frame.id : frame.sub));
      if (sub) sub._receive(frame);
    } else if (kind === 'error') {
      const id = frame.id == null ? null : String(frame.id);
      const sub = id === null ? undefined : this._byWire.get(id);
      if (sub) {
        this._byWire.delete(/** @type {string} */ (id));
        this._client._refuse(sub, frame);
      } else {
        this._client._onErrorFrame(frame);
      }
    }
    // pong, unsubscribed, welcome again, unknown types: nothing to do.
  }

  /** @param {import('./types.js').WelcomeFrame} frame */
  _onWelcome(frame) {
    clearTimeout(this._openTimer);
    const position = frame.position == null ? null : String(frame.position);
    this._connectionPosition = position;
    this._delays = null; // reset the backoff after a successful welcome
    this._handshakeFailures = 0;
    this._client._connected(position);
    this._startHeartbeat();
  }

  _startHeartbeat() {
    const { heartbeatMs, heartbeatTimeoutMs } = this._client.options;
    if (!(heartbeatMs > 0)) return;
    const ws = this._ws;
    const beat = () => {
      if (this._ws !== ws) return;
      this._activity = false;
      this.send({ type: 'ping' });
      this._pongTimer = setTimeout(() => {
        if (this._ws !== ws) return;
        if (!this._activity) {
          // Any frame counts as life; none within the timeout: the link is dead.
          this._drop();
          this._ended({ ws, opened: true, welcomed: true, httpStatus: null }, null, 'heartbeat timeout');
          return;
        }
        this._pingTimer = setTimeout(beat, heartbeatMs);
      }, heartbeatTimeoutMs);
    };
    this._pingTimer = setTimeout(beat, heartbeatMs);
  }

  _stopTimers() {
    clearTimeout(this._openTimer);
    clearTimeout(this._pingTimer);
    clearTimeout(this._pongTimer);
  }

  // Detach and close the current socket without waiting for its close event
  // (a dead TCP connection may take minutes to report one).
  _drop(code = 4000, reason = 'dropped by the client') {
    const ws = this._ws;
    this._ws = null;
    this._stopTimers();
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onclose = null;
    // Closing a socket that is still connecting reports an error (the ws package
    // throws it if nobody listens): keep a listener.
    ws.onerror = noop;
    try {
      // Browsers accept only 1000 or 3000-4999 from scripts.
      ws.close(code, reason);
    } catch {
      try {
        ws.close();
      } catch {
        // already closed
      }
    }
  }

  /**
   * The connection `conn` ended with close `code` (null: no close frame).
   * @param {Connection} conn
   * @param {number | null} code
   * @param {string} reason
   */
  _ended(conn, code, reason) {
    this._stopTimers();
    if (this._ws === conn.ws) this._ws = null;
    const sentHere = new Map(this._byWire);
    this._byWire.clear();
    if (!this._active) return;
    const client = this._client;
    if (conn.httpStatus === 401 || conn.httpStatus === 403) code = conn.httpStatus === 401 ? 4501 : 4502;
    const action = closeAction(code);
    if (action === 'terminal') {
      const meaning = CLOSE_MEANINGS[/** @type {keyof typeof CLOSE_MEANINGS} */ (code)] || 'do not reconnect';
      const detail = conn.httpStatus ? `HTTP ${conn.httpStatus}` : `close code ${code}`;
      client._terminate(new PgcastError('rejected', `gateway rejected the connection (${detail}, ${meaning})${reason ? `: ${reason}` : ''}`, {
        closeCode: code ?? undefined,
        hint: code === 4501 || code === 4503 ? 'pass a valid token' : undefined,
      }));
      return;
    }
    if (action === 'frame_too_big') {
      for (const [wireId, sub] of sentHere) {
        if (sub.wireId === wireId && sub.state === 'pending') {
          client._end(sub, new PgcastError('frame_too_big', `subscription to ${sub.target}: the gateway refused the subscribe frame as too big (close 1009)`, {
            closeCode: 1009,
            hint: 'use a shorter filter or fewer columns',
          }), false);
        }
      }
    }
    if (!conn.opened) {
      this._handshakeFailures += 1;
      if (client._handshakeFailed(this._handshakeFailures)) return;
    }
    this._scheduleReconnect();
  }

  _scheduleReconnect() {
    if (!this._active) return;
    const client = this._client;
    client._setStatus('offline');
    if (this._delays === null) this._delays = backoff(client._backoffOptions, client.options.random || Math.random);
    const delay = this._delays.next().value;
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = setTimeout(() => this._connect(), delay);
  }
}
