// pgcast browser client: one resumable connection per gateway URL.
//
// A plain ES module with no imports and no Node-only APIs: it runs unchanged in
// browsers; Node tests inject `WebSocket` / `EventSource` constructors.
//
// What it owns (the same rules as the Python client, src/pgcast/client/):
// - pure pieces, exported for tests: `backoff` delays, `closeAction` (the close
//   code policy), `RecentIds` (bounded LRU of delivered change ids), the filter
//   evaluator (`parseFilter`, PostgREST syntax, same semantics as the gateway) and
//   `TableMirror` (snapshot + changes applied by primary key);
// - `Client`: connects, waits for `welcome`, resubscribes every subscription with
//   `since` = its last delivered change id (else the snapshot's position, else the
//   `welcome` position of the connection it was first sent on), drops replayed
//   duplicates, queues outgoing messages while offline, heartbeats, reconnects with
//   backoff + jitter unless the close code says not to (4500-4999), and falls back
//   to Server-Sent Events when WebSocket handshakes keep failing.
//
// The wire contract is docs/protocol.md; close codes are docs/close-codes.md.

// -- errors ---------------------------------------------------------------------------

/** Base class of every error this module reports; `code` is machine-readable. */
export class PgcastError extends Error {
  constructor(code, message, { hint, closeCode, id, frame } = {}) {
    super(hint ? `${message} (hint: ${hint})` : message);
    this.name = 'PgcastError';
    this.code = code;
    if (hint !== undefined) this.hint = hint;
    if (closeCode !== undefined) this.closeCode = closeCode;
    if (id !== undefined) this.id = id;
    if (frame !== undefined) this.frame = frame;
  }
}

/** A filter string the gateway would refuse with `bad_filter`. */
export class FilterError extends PgcastError {
  constructor(message, hint) {
    super('bad_filter', message, { hint });
    this.name = 'FilterError';
  }
}

// -- backoff --------------------------------------------------------------------------

/** Default reconnect delays (milliseconds): 100 ms doubling up to 10 s, equal jitter. */
export const DEFAULT_BACKOFF = Object.freeze({ initialMs: 100, maxMs: 10000, factor: 2, jitter: 0.5 });

function checkBackoff({ initialMs, maxMs, factor, jitter }) {
  if (!(initialMs > 0)) throw new RangeError(`backoff initialMs must be > 0, got ${initialMs}`);
  if (!(maxMs >= initialMs)) throw new RangeError(`backoff maxMs (${maxMs}) must be >= initialMs (${initialMs})`);
  if (!(factor >= 1)) throw new RangeError(`backoff factor must be >= 1, got ${factor}`);
  if (!(jitter >= 0 && jitter <= 1)) throw new RangeError(`backoff jitter must be between 0 and 1, got ${jitter}`);
}

/**
 * The delay before retry number `attempt` (0-based), in milliseconds.
 *
 * nominal = min(maxMs, initialMs * factor ** attempt);
 * delay   = nominal * (1 - jitter) + random * nominal * jitter
 * so every delay lies in [nominal * (1 - jitter), nominal] and never exceeds maxMs.
 * jitter 0.5 (default) is "equal jitter", 1 is "full jitter", 0 is plain exponential.
 */
export function backoffDelay(attempt, options = {}, random = Math.random) {
  const o = { ...DEFAULT_BACKOFF, ...options };
  checkBackoff(o);
  const nominal = Math.min(o.maxMs, o.initialMs * Math.pow(o.factor, Math.max(0, attempt)));
  return nominal * (1 - o.jitter) + random() * nominal * o.jitter;
}

/** An endless iterator of reconnect delays (ms); make a new one to reset after a success. */
export function* backoff(options = {}, random = Math.random) {
  const o = { ...DEFAULT_BACKOFF, ...options };
  checkBackoff(o);
  let nominal = o.initialMs;
  for (;;) {
    yield nominal * (1 - o.jitter) + random() * nominal * o.jitter;
    nominal = Math.min(o.maxMs, nominal * o.factor); // stop growing once capped
  }
}

// -- close codes ----------------------------------------------------------------------

const CLOSE_MEANINGS = { 4500: 'protocol violation', 4501: 'unauthorized', 4502: 'forbidden', 4503: 'token expired' };

/**
 * What to do after the connection closed with `code` (null/undefined/1006: no close
 * frame): 'terminal' for 4500-4999 (do not reconnect), 'frame_too_big' for 1009
 * (do not resend the refused subscribe, reconnect for the rest), else 'reconnect'
 * (a server-initiated 1000 too: the caller still wants its subscriptions).
 */
export function closeAction(code) {
  if (typeof code === 'number' && code >= 4500 && code <= 4999) return 'terminal';
  if (code === 1009) return 'frame_too_big';
  return 'reconnect';
}

// -- duplicate ids --------------------------------------------------------------------

/**
 * The change ids a subscription delivered most recently (a bounded LRU).
 *
 * A resumed subscription replays a window before its resume point, so it may get
 * ids it already delivered. Never drop by "id <= last id": ids are not commit
 * order. The LRU fails safe: an id older than the last `capacity` is delivered
 * twice, a new id is never dropped.
 */
export class RecentIds {
  constructor(capacity = 10000) {
    if (!(capacity >= 1)) throw new RangeError(`capacity must be >= 1, got ${capacity}`);
    this.capacity = capacity;
    this._ids = new Map();
  }
  /** Remember `id`; false if it was already remembered (a duplicate). */
  add(id) {
    id = String(id);
    if (this._ids.has(id)) {
      this._ids.delete(id);
      this._ids.set(id, true);
      return false;
    }
    this._ids.set(id, true);
    if (this._ids.size > this.capacity) this._ids.delete(this._ids.keys().next().value);
    return true;
  }
  has(id) {
    return this._ids.has(String(id));
  }
  get size() {
    return this._ids.size;
  }
}

// -- filters (PostgREST syntax; mirrors src/pgcast/filters.py) ------------------------

export const FILTER_OPERATORS = Object.freeze(['eq', 'neq', 'lt', 'lte', 'gt', 'gte', 'in', 'is']);
const IS_VALUES = ['null', 'not_null', 'true', 'false'];
const MAX_FILTER_LENGTH = 4096;
const MAX_CONDITIONS = 32;
const MAX_IN_VALUES = 1000;
const COLUMN_RE = /^[^\x00-\x1f=&"]{1,63}$/u;
// Strict JSON-style numbers, as the gateway (src/pgcast/filters.py): no "_",
// spaces, "+" or leading zeros, so "7_0", " 70", "+70" and "0070" never match 70
// (a tenant id must not match another tenant's rows), and "0x10" or "" never
// become numbers as JavaScript's Number() would make them.
const INT_RE = /^-?(?:0|[1-9][0-9]*)$/;
const DECIMAL_RE = /^-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?$/;
const LEADING_ZERO_RE = /^-?0[0-9]/;

function codePointLength(text) {
  let n = 0;
  for (const _ of text) n += 1;
  return n;
}

/**
 * Parse a filter string; throws FilterError (code 'bad_filter') where the gateway
 * would refuse it. Returns `{conditions, columns, matches(row), toString()}`.
 */
export function parseFilter(text) {
  if (text === undefined || text === null || text === '') return MATCH_ALL;
  if (typeof text !== 'string') throw new FilterError("filter must be a string like 'status=eq.pending'");
  if (codePointLength(text) > MAX_FILTER_LENGTH) {
    throw new FilterError(`filter is longer than ${MAX_FILTER_LENGTH} characters`);
  }
  const terms = text.split('&');
  if (terms.length > MAX_CONDITIONS) throw new FilterError(`filter has more than ${MAX_CONDITIONS} conditions`);
  return new Filter(terms.map(parseTerm));
}

/** True when `row` matches `filter` (a string or a parsed filter). A null row never matches. */
export function matchesFilter(filter, row) {
  const parsed = typeof filter === 'object' && filter !== null ? filter : parseFilter(filter);
  return parsed.matches(row);
}

class Filter {
  constructor(conditions) {
    this.conditions = Object.freeze(conditions);
    this.columns = Object.freeze([...new Set(conditions.map((c) => c.column))]);
  }
  matches(row) {
    if (row === null || row === undefined) return false;
    return this.conditions.every((c) => conditionMatches(c, row));
  }
  toString() {
    return this.conditions.map(conditionText).join('&');
  }
}

const MATCH_ALL = new Filter([]);

function conditionText(c) {
  const value = c.op === 'in' ? `(${c.values.join(',')})` : c.values[0];
  return `${c.column}=${c.negate ? 'not.' : ''}${c.op}.${value}`;
}

function quoteTerm(term) {
  return `'${term}'`;
}

function parseTerm(term) {
  const eq = term.indexOf('=');
  const column = eq === -1 ? term : term.slice(0, eq);
  if (eq === -1 || !column) {
    throw new FilterError(`bad filter term ${quoteTerm(term)}: expected column=operator.value`, 'for example status=eq.pending');
  }
  if (!COLUMN_RE.test(column)) throw new FilterError(`bad column name '${column}' in filter term ${quoteTerm(term)}`);
  let rest = term.slice(eq + 1);
  let negate = false;
  if (rest.startsWith('not.')) {
    negate = true;
    rest = rest.slice(4);
  }
  const dot = rest.indexOf('.');
  const op = dot === -1 ? rest : rest.slice(0, dot);
  if (!FILTER_OPERATORS.includes(op) || dot === -1) {
    throw new FilterError(
      `bad operator in filter term ${quoteTerm(term)}`,
      `use one of ${FILTER_OPERATORS.join(', ')} followed by a dot and a value`,
    );
  }
  const value = rest.slice(dot + 1);
  if (op === 'in') return Object.freeze({ column, op, values: Object.freeze(parseList(term, value)), negate });
  if (op === 'is' && !IS_VALUES.includes(value)) {
    throw new FilterError(`bad value in filter term ${quoteTerm(term)}`, 'is. takes null, not_null, true or false');
  }
  return Object.freeze({ column, op, values: Object.freeze([value]), negate });
}

function parseList(term, value) {
  if (value.length < 2 || value[0] !== '(' || value[value.length - 1] !== ')') {
    throw new FilterError(`bad list in filter term ${quoteTerm(term)}`, 'write in.(1,2,3)');
  }
  const inner = value.slice(1, -1);
  const items = [];
  let i = 0;
  while (i <= inner.length) {
    if (i < inner.length && inner[i] === '"') {
      let end = i + 1;
      let chars = '';
      while (end < inner.length && inner[end] !== '"') {
        if (inner[end] === '\\' && end + 1 < inner.length) end += 1;
        chars += inner[end];
        end += 1;
      }
      if (end >= inner.length) throw new FilterError(`unterminated quote in filter term ${quoteTerm(term)}`);
      items.push(chars);
      i = end + 1;
      if (i < inner.length && inner[i] !== ',') throw new FilterError(`bad list in filter term ${quoteTerm(term)}`);
      i += 1;
    } else {
      let end = inner.indexOf(',', i);
      if (end === -1) end = inner.length;
      items.push(inner.slice(i, end));
      i = end + 1;
    }
  }
  if (!inner || items.length > MAX_IN_VALUES) {
    throw new FilterError(`list in filter term ${quoteTerm(term)} must hold 1 to ${MAX_IN_VALUES} values`);
  }
  return items;
}

function parseNumber(literal) {
  if (!INT_RE.test(literal) && (!DECIMAL_RE.test(literal) || LEADING_ZERO_RE.test(literal))) return null;
  const n = Number(literal);
  return Number.isFinite(n) ? n : null;
}

// Python compares str by code point; JavaScript's < compares UTF-16 code units,
// which orders U+E000..U+FFFF after astral characters. Compare code points.
function compareStrings(a, b) {
  if (a === b) return 0;
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.codePointAt(i);
    const y = b.codePointAt(i);
    if (x !== y) return x < y ? -1 : 1;
    if (x > 0xffff) i += 1;
  }
  return a.length < b.length ? -1 : a.length > b.length ? 1 : 0;
}

function compare(value, literal) {
  if (typeof value === 'boolean') {
    if (literal !== 'true' && literal !== 'false') return null;
    const other = literal === 'true';
    return value === other ? 0 : value ? 1 : -1;
  }
  if (typeof value === 'number') {
    const n = parseNumber(literal);
    if (n === null) return null;
    return value > n ? 1 : value < n ? -1 : 0;
  }
  if (typeof value === 'string') return compareStrings(value, literal);
  return null;
}

function test(op, value, literals) {
  if (op === 'is') {
    const literal = literals[0];
    if (literal === 'null') return value === null;
    if (literal === 'not_null') return value !== null;
    return value === (literal === 'true');
  }
  if (value === null) return null;
  if (op === 'in') return literals.some((literal) => compare(value, literal) === 0);
  const order = compare(value, literals[0]);
  if (order === null) return op === 'neq';
  switch (op) {
    case 'eq': return order === 0;
    case 'neq': return order !== 0;
    case 'lt': return order < 0;
    case 'lte': return order <= 0;
    case 'gt': return order > 0;
    default: return order >= 0; // gte
  }
}

function conditionMatches(condition, row) {
  // Own properties only: "constructor" or "__proto__" must read as an absent column.
  const value = Object.prototype.hasOwnProperty.call(row, condition.column) ? row[condition.column] : null;
  const result = test(condition.op, value === undefined ? null : value, condition.values);
  if (result === null) return false; // NULL compared with a value: never matches, negated or not
  return result !== condition.negate;
}

// -- table mirror ---------------------------------------------------------------------

/**
 * A local copy of a table's rows (for one filter) built from `snapshot` frames and
 * `change` frames, applied by primary key as docs/protocol.md ("Building a mirror")
 * says. `key` is a column name (default "id") or a function row -> key.
 */
export class TableMirror {
  constructor({ filter, key = 'id' } = {}) {
    this.filter = typeof filter === 'object' && filter !== null ? filter : parseFilter(filter);
    this.keyOf = typeof key === 'function' ? key : (row) => row[key];
    this._rows = new Map();
    this._pending = null; // rows of a snapshot still arriving
    this.version = 0;
  }
  /** Apply a `snapshot` frame; part 0 starts over. True when the visible rows changed. */
  applySnapshot(frame) {
    if (frame.part === 0 || this._pending === null) this._pending = new Map();
    for (const row of frame.rows || []) this._pending.set(this._key(row), row);
    if (!frame.done) return false;
    this._rows = this._pending;
    this._pending = null;
    this.version += 1;
    return true;
  }
  /** Apply a `change` frame. True when the visible rows changed. */
  applyChange(frame) {
    const { op, record, old_record: old } = frame;
    let changed = false;
    if (op === 'TRUNCATE') {
      changed = this._rows.size > 0;
      this._rows = new Map();
      if (this._pending) this._pending = new Map();
    } else if (op === 'DELETE') {
      if (old) changed = this._rows.delete(this._key(old));
    } else if (op === 'INSERT' || op === 'UPDATE') {
      if (!record) return false;
      const key = this._key(record);
      if (old) {
        const oldKey = this._key(old);
        if (oldKey !== key) changed = this._rows.delete(oldKey) || changed;
      }
      if (this.filter.matches(record)) {
        this._rows.set(key, record);
        changed = true;
      } else {
        changed = this._rows.delete(key) || changed;
      }
    }
    if (changed) this.version += 1;
    return changed;
  }
  /** Forget every row (for example before a fresh snapshot after `resync`). */
  clear() {
    this._rows = new Map();
    this._pending = null;
    this.version += 1;
  }
  get size() {
    return this._rows.size;
  }
  get(key) {
    return this._rows.get(normalizeKey(key));
  }
  /** The rows, in snapshot order then arrival order. */
  rows() {
    return Array.from(this._rows.values());
  }
  _key(row) {
    return normalizeKey(this.keyOf(row));
  }
}

// Keys become map keys: objects/arrays (composite keys) by their JSON text.
function normalizeKey(key) {
  return key !== null && typeof key === 'object' ? JSON.stringify(key) : key;
}

// -- URLs -----------------------------------------------------------------------------

/**
 * The gateway WebSocket endpoint for `url`: ws(s)://host/.../ws. `http(s)` maps to
 * `ws(s)`; a relative URL ("/ws", "/app/") or none at all resolves against
 * `location` in a browser. The query string is kept.
 */
export function normalizeUrl(url, base = globalThis.location && globalThis.location.href) {
  let parsed;
  try {
    parsed = base ? new URL(url ?? '/ws', base) : new URL(url);
  } catch {
    throw new PgcastError('bad_url', `not a gateway URL: ${JSON.stringify(url)}`, {
      hint: 'use ws://host:port or wss://host (for example ws://127.0.0.1:8000)',
    });
  }
  const scheme = { 'http:': 'ws:', 'https:': 'wss:' }[parsed.protocol] || parsed.protocol;
  if ((scheme !== 'ws:' && scheme !== 'wss:') || !parsed.host) {
    throw new PgcastError('bad_url', `not a gateway URL: ${JSON.stringify(url)}`, {
      hint: 'use ws://host:port or wss://host (for example ws://127.0.0.1:8000)',
    });
  }
  let path = parsed.pathname.replace(/\/+$/, '');
  if (!path.endsWith('/ws')) path += '/ws';
  return `${scheme}//${parsed.host}${path}${parsed.search}`;
}

function withToken(url, token) {
  if (!token) return url;
  return `${url}${url.includes('?') ? '&' : '?'}token=${encodeURIComponent(token)}`;
}

/** The SSE URL (`.../sse?table=...`) for one subscription request; see the README. */
export function sseUrl(wsUrl, request, { since, token } = {}) {
  const url = new URL(wsUrl.replace(/^ws/, 'http'));
  url.pathname = url.pathname.replace(/\/ws$/, '/sse');
  const q = url.searchParams;
  if (request.channel !== undefined) q.set('channel', request.channel);
  else {
    q.set('table', request.table);
    if (request.schema != null) q.set('schema', request.schema);
    if (request.filter != null && request.filter !== '') q.set('filter', request.filter);
    if (request.events != null) q.set('events', request.events.map((e) => String(e).toUpperCase()).join(','));
    if (request.columns != null) q.set('columns', request.columns.join(','));
    if (since != null) q.set('since', since);
    else if (request.snapshot) q.set('snapshot', 'true');
  }
  if (token) q.set('token', token);
  return url.toString();
}

// -- client ---------------------------------------------------------------------------

const WS_OPEN = 1;

function noop() {}

function safeCall(fn, ...args) {
  if (typeof fn !== 'function') return;
  try {
    fn(...args);
  } catch (err) {
    // A throwing handler must not break the connection; report it like the browser would.
    setTimeout(() => {
      throw err;
    });
  }
}

function subscribeFrame(wireId, request, since) {
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

/**
 * One table or channel subscription. Returned by `client.subscribe()`; the caller
 * keeps it only to `unsubscribe()`. State: 'pending' (sent or waiting to be sent),
 * 'live' (accepted), 'closed' (unsubscribed or client closed), 'failed' (refused).
 */
class Subscription {
  constructor(client, key, request, handlers, { since, dedupeWindow }) {
    this._client = client;
    this.id = key;
    this.request = request;
    this.isChannel = request.channel !== undefined;
    this.target = this.isChannel ? `channel ${request.channel}` : `${request.schema || 'public'}.${request.table}`;
    this.handlers = handlers;
    this.state = 'pending';
    /** The id of the last change delivered to onChange. */
    this.lastId = null;
    /** Where to resume when no change was delivered yet (since, snapshot or welcome position). */
    this.resumeFrom = since == null ? null : String(since);
    this.duplicates = 0;
    this.wireId = null;
    this.error = null;
    this._attempt = 0;
    this._seen = new RecentIds(dedupeWindow);
    this._source = null; // EventSource in SSE mode
  }

  unsubscribe() {
    this._client._unregister(this);
    if (this.state !== 'failed') this.state = 'closed';
  }

  _nextWireId() {
    this._attempt += 1;
    this.wireId = this._attempt === 1 ? this.id : `${this.id}-${this._attempt}`;
    return this.wireId;
  }

  _since() {
    return this.isChannel ? null : (this.lastId ?? this.resumeFrom);
  }

  _accept(frame) {
    if (this.state === 'pending') this.state = 'live';
    safeCall(this.handlers.onSubscribed, frame);
  }

  _onChange(frame) {
    if (this.state === 'closed' || this.state === 'failed') return;
    const id = frame.id != null ? String(frame.id) : null;
    if (id !== null && this._seen.has(id)) {
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

  _onMessage(frame) {
    if (this.state === 'closed' || this.state === 'failed') return;
    this._acceptQuietly();
    safeCall(this.handlers.onMessage, frame);
  }

  _onSnapshot(frame) {
    if (this.state === 'closed' || this.state === 'failed') return;
    this._acceptQuietly();
    if (frame.done && this.lastId === null && frame.position != null) {
      // Resume from the snapshot's position on any later resubscribe; never re-snapshot.
      this.resumeFrom = String(frame.position);
      this.request = { ...this.request, snapshot: false };
    }
    safeCall(this.handlers.onSnapshot, frame);
  }

  _onResync(frame) {
    if (this.state === 'closed' || this.state === 'failed') return;
    this._acceptQuietly();
    safeCall(this.handlers.onResync, frame);
    this._client._emit('resync', frame, this);
  }

  // Replayed frames may precede `subscribed`; they prove the subscribe was accepted
  // but onSubscribed waits for the real frame.
  _acceptQuietly() {
    if (this.state === 'pending') this.state = 'live';
  }

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
class Channel {
  constructor(client, name) {
    this._client = client;
    this.name = name;
    this._listeners = { message: new Set(), error: new Set(), subscribed: new Set() };
    this._sub = null;
  }

  on(event, callback) {
    const set = this._listeners[event];
    if (!set) throw new PgcastError('bad_event', `unknown channel event '${event}'`, { hint: 'use message, error or subscribed' });
    set.add(callback);
    if (event === 'message' && this._sub === null) this._subscribe();
    return () => this.off(event, callback);
  }

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

  _emit(event, value) {
    for (const cb of [...this._listeners[event]]) safeCall(cb, value);
  }
}

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

/**
 * A gateway connection that reconnects and resumes by itself. Use `createClient`
 * (or `getClient` to share one per URL). It connects at once.
 */
export class Client {
  constructor(options = {}) {
    const o = { ...DEFAULTS, ...options };
    this.url = normalizeUrl(o.url);
    this.options = o;
    this._backoffOptions = { ...DEFAULT_BACKOFF, ...(o.backoff || {}) };
    checkBackoff(this._backoffOptions);
    this._WebSocket = o.WebSocket || globalThis.WebSocket;
    this._EventSource = o.EventSource || globalThis.EventSource;
    this._document = o.document !== undefined ? o.document : globalThis.document;
    if (!['auto', 'websocket', 'sse'].includes(o.transport)) {
      throw new PgcastError('bad_option', `unknown transport '${o.transport}'`, { hint: "use 'auto', 'websocket' or 'sse'" });
    }
    this.status = 'connecting';
    /** 'websocket' or 'sse' (after the fallback, or with transport: 'sse'). */
    this.transport = o.transport === 'sse' ? 'sse' : 'websocket';
    /** The change-log position announced by the first `welcome`. */
    this.position = null;
    /** The error that closed the client (a 4500-4999 close), else null. */
    this.error = null;
    this._connectionPosition = null;
    this._listeners = new Map();
    this._subs = new Map(); // key -> Subscription
    this._byWire = new Map(); // wire id -> Subscription, on the current connection
    this._pendingPublishes = new Map(); // publish id -> onError
    this._outbox = []; // messages queued while offline
    this._counter = 0;
    this._ws = null;
    this._delays = null;
    this._reconnectTimer = null;
    this._openTimer = null;
    this._pingTimer = null;
    this._pongTimer = null;
    this._activity = false;
    this._handshakeFailures = 0;
    this._closed = false;
    this._paused = false;
    this._connectSeq = 0;

    if (o.pauseWhenHidden && this._document && typeof this._document.addEventListener === 'function') {
      this._onVisibility = () => (this._document.hidden ? this._pause() : this._resume());
      this._document.addEventListener('visibilitychange', this._onVisibility);
      this._paused = !!this._document.hidden;
    }
    if (this._paused) this._setStatus('offline');
    else if (this.transport === 'sse') this._setStatus('connecting');
    else this._connect();
  }

  // -- events

  /** Listen to 'status' (status), 'resync' (frame, subscription) or 'error' (error). Returns an unsubscribe function. */
  on(event, callback) {
    if (!this._listeners.has(event)) this._listeners.set(event, new Set());
    this._listeners.get(event).add(callback);
    return () => this.off(event, callback);
  }

  off(event, callback) {
    const set = this._listeners.get(event);
    if (set) set.delete(callback);
  }

  _emit(event, ...args) {
    const set = this._listeners.get(event);
    if (set) for (const cb of [...set]) safeCall(cb, ...args);
  }

  _setStatus(status) {
    if (this.status === status || this.status === 'closed') return;
    this.status = status;
    this._emit('status', status);
  }

  _reportError(error) {
    this._emit('error', error);
  }

  // -- public API

  /**
   * Subscribe to a table: `{table, schema, filter, events, columns, snapshot, since}`.
   * Handlers: onChange(frame), onSnapshot(frame), onResync(frame), onSubscribed(frame), onError(error).
   */
  subscribe(request, handlers = {}) {
    if (!request || typeof request.table !== 'string') {
      throw new PgcastError('bad_request', 'subscribe needs a table name', { hint: "client.subscribe({table: 'orders'})" });
    }
    if (request.snapshot && request.since != null) {
      throw new PgcastError('bad_request', 'snapshot and since exclude each other');
    }
    const { since, ...rest } = request;
    const clean = { table: rest.table };
    for (const k of ['schema', 'filter', 'events', 'columns']) if (rest[k] != null) clean[k] = rest[k];
    clean.snapshot = !!rest.snapshot;
    return this._subscribeRequest(clean, handlers, 's', since);
  }

  /**
   * A live mirror of a table: subscribes with a snapshot, applies changes by
   * primary key (`key`: column name, default "id", or a function), drops rows
   * whose new record leaves the filter, clears on TRUNCATE, and re-snapshots on
   * `resync`. `onRows(rows, mirror)` runs after every visible change. Throws
   * FilterError at once for a filter the gateway would refuse.
   */
  watchTable(request, { onRows, onChange, onError, onSubscribed } = {}) {
    const { key = 'id', filter, columns, ...rest } = request || {};
    const parsed = parseFilter(filter);
    let wanted = columns;
    if (columns != null) {
      // The mirror tests the filter on each record, so it needs the filter's and the key's columns.
      const extra = [...parsed.columns, ...(typeof key === 'string' ? [key] : [])];
      wanted = [...new Set([...columns, ...extra])];
    }
    const mirror = new TableMirror({ filter: parsed, key });
    let sub = null;
    let stopped = false;
    const start = () => {
      sub = this.subscribe({ ...rest, filter, columns: wanted, snapshot: true }, {
        onSnapshot: (frame) => {
          if (mirror.applySnapshot(frame)) safeCall(onRows, mirror.rows(), mirror);
        },
        onChange: (frame) => {
          if (mirror.applyChange(frame)) safeCall(onRows, mirror.rows(), mirror);
          safeCall(onChange, frame);
        },
        onResync: () => {
          // The log no longer covers our position: rebuild from a fresh snapshot
          // (the current rows stay visible until it is complete).
          if (stopped) return;
          sub.unsubscribe();
          start();
        },
        onSubscribed: (frame) => safeCall(onSubscribed, frame),
        onError: (error) => safeCall(onError, error),
      });
    };
    start();
    return {
      mirror,
      get subscription() {
        return sub;
      },
      unsubscribe() {
        stopped = true;
        sub.unsubscribe();
      },
    };
  }

  /** A raw NOTIFY channel. */
  channel(name) {
    return new Channel(this, name);
  }

  /** Close the connection and end every subscription. Final. */
  close() {
    if (this._closed) return;
    this._closed = true;
    this._stopConnection(1000, 'client closed');
    this._closeSources();
    clearTimeout(this._reconnectTimer);
    if (this._onVisibility) this._document.removeEventListener('visibilitychange', this._onVisibility);
    for (const sub of this._subs.values()) if (sub.state !== 'failed') sub.state = 'closed';
    this._subs.clear();
    this._byWire.clear();
    this._outbox = [];
    if (registry.get(this.url) === this) registry.delete(this.url);
    this._setStatus('closed');
  }

  // -- subscriptions

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
    if (this.transport === 'sse') this._openSource(sub);
    else if (this.status === 'live' && this._ws) this._sendSubscribe(sub);
    // Otherwise the next welcome sends it.
    return sub;
  }

  _unregister(sub) {
    this._subs.delete(sub.id);
    if (sub._source) {
      sub._source.close();
      sub._source = null;
      this._updateSseStatus();
    }
    const wireId = sub.wireId;
    if (wireId === null || this._byWire.get(wireId) !== sub) return;
    this._byWire.delete(wireId);
    if (this.status === 'live') this._sendNow({ type: 'unsubscribe', id: wireId });
  }

  _sendSubscribe(sub) {
    const wireId = sub._nextWireId();
    const frame = subscribeFrame(wireId, sub.request, sub._since());
    if (!sub.isChannel && sub.resumeFrom === null && sub.lastId === null && !sub.request.snapshot) {
      // Sent live (no since): if we reconnect before its first change, resume
      // from this connection's position so nothing committed meanwhile is skipped.
      sub.resumeFrom = this._connectionPosition;
    }
    this._byWire.set(wireId, sub);
    this._sendNow(frame);
  }

  _publish(channel, payload, onError) {
    if (this._closed) {
      const error = this.error || new PgcastError('closed', 'the client is closed');
      queueMicrotask(() => onError(error));
      return null;
    }
    this._counter += 1;
    const id = `p${this._counter}`;
    const frame = { type: 'publish', id, channel, payload };
    this._pendingPublishes.set(id, onError);
    if (this._pendingPublishes.size > this.options.queueSize) {
      this._pendingPublishes.delete(this._pendingPublishes.keys().next().value);
    }
    if (this.transport === 'sse') {
      this._pendingPublishes.delete(id);
      const error = new PgcastError('not_supported', 'publish needs a WebSocket connection; this client fell back to SSE', { id });
      queueMicrotask(() => {
        onError(error);
        this._reportError(error);
      });
      return id;
    }
    this._send(frame, onError);
    return id;
  }

  // Send now if live, else queue (bounded: the oldest queued message is dropped and reported).
  _send(frame, onError = noop) {
    // A socket that is closing while we still say 'live' refuses the send: queue it then.
    if (this.status === 'live' && this._ws && this._sendNow(frame)) return;
    this._outbox.push({ frame, onError });
    if (this._outbox.length > this.options.queueSize) {
      const dropped = this._outbox.shift();
      const error = new PgcastError('queue_full', `outgoing queue full (${this.options.queueSize} messages while offline): dropped a ${dropped.frame.type}`, {
        id: dropped.frame.id,
        hint: 'raise the queueSize option or send less while offline',
      });
      if (dropped.frame.id) this._pendingPublishes.delete(dropped.frame.id);
      safeCall(dropped.onError, error);
      this._reportError(error);
    }
  }

  _sendNow(frame) {
    const ws = this._ws;
    if (!ws || ws.readyState !== WS_OPEN) return false;
    try {
      ws.send(JSON.stringify(frame));
      return true;
    } catch {
      return false; // the connection is going away; its close resends what is needed
    }
  }

  // -- connection loop (WebSocket)

  async _connect() {
    if (this._closed || this._paused || this.transport !== 'websocket') return;
    const seq = ++this._connectSeq;
    this._setStatus('connecting');
    let token = this.options.token;
    if (typeof this.options.getToken === 'function') {
      try {
        token = await this.options.getToken();
      } catch (err) {
        if (seq !== this._connectSeq || this._closed) return;
        this._reportError(new PgcastError('token', `getToken failed: ${err && err.message ? err.message : err}`));
        this._scheduleReconnect();
        return;
      }
      if (seq !== this._connectSeq || this._closed || this._paused) return;
    }
    const WebSocketImpl = this._WebSocket;
    if (typeof WebSocketImpl !== 'function') {
      if (this._canUseSse()) return this._switchToSse();
      this._terminate(new PgcastError('no_websocket', 'no WebSocket implementation', { hint: 'pass the WebSocket option (e.g. from the ws package under Node)' }));
      return;
    }
    let ws;
    try {
      ws = new WebSocketImpl(withToken(this.url, token));
    } catch (err) {
      this._reportError(new PgcastError('connect', `cannot open ${this.url}: ${err && err.message ? err.message : err}`));
      this._scheduleReconnect();
      return;
    }
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
      this._connectionEnded(conn, event.code, event.reason || '');
    };
    this._openTimer = setTimeout(() => {
      if (this._ws === ws && !conn.welcomed) {
        this._dropConnection();
        this._connectionEnded(conn, null, 'no welcome within openTimeoutMs');
      }
    }, this.options.openTimeoutMs);
  }

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
    this._dispatch(frame);
  }

  _onWelcome(frame) {
    clearTimeout(this._openTimer);
    const position = frame.position == null ? null : String(frame.position);
    if (this.position === null) this.position = position;
    this._connectionPosition = position;
    this._delays = null; // reset the backoff after a successful welcome
    this._handshakeFailures = 0;
    this._setStatus('live');
    for (const sub of [...this._subs.values()]) {
      if (sub.state === 'pending' || sub.state === 'live') this._sendSubscribe(sub);
    }
    const queued = this._outbox;
    this._outbox = [];
    for (const { frame: message } of queued) this._sendNow(message);
    this._startHeartbeat();
  }

  _dispatch(frame) {
    const kind = frame.type;
    if (kind === 'change' || kind === 'message' || kind === 'resync' || kind === 'snapshot') {
      const sub = this._byWire.get(String(frame.sub));
      if (!sub) return; // for a subscription already unsubscribed
      this._deliver(sub, frame);
    } else if (kind === 'subscribed') {
      const sub = this._byWire.get(String(frame.id));
      if (sub) sub._accept(frame);
    } else if (kind === 'error') {
      this._onError(frame);
    }
    // pong, unsubscribed, welcome again, unknown types: nothing to do.
  }

  _deliver(sub, frame) {
    if (frame.type === 'change') sub._onChange(frame);
    else if (frame.type === 'message') sub._onMessage(frame);
    else if (frame.type === 'snapshot') sub._onSnapshot(frame);
    else if (frame.type === 'resync') sub._onResync(frame);
    else if (frame.type === 'subscribed') sub._accept(frame);
    else if (frame.type === 'error') {
      this._subs.delete(sub.id);
      sub._fail(new PgcastError(String(frame.code || 'error'), `subscription to ${sub.target} refused: ${frame.message || ''}`, { id: frame.id, frame }));
    }
  }

  _onError(frame) {
    const code = String(frame.code || 'error');
    const message = String(frame.message || '');
    const id = frame.id == null ? null : String(frame.id);
    const sub = id === null ? undefined : this._byWire.get(id);
    if (sub) {
      this._byWire.delete(id);
      this._subs.delete(sub.id);
      const error = new PgcastError(code, `subscription to ${sub.target} refused: ${code}: ${message}`, { id, frame });
      sub._fail(error);
      this._reportError(error);
      return;
    }
    const onPublishError = id === null ? undefined : this._pendingPublishes.get(id);
    const error = new PgcastError(code, message || code, { id: id ?? undefined, frame });
    if (onPublishError) {
      this._pendingPublishes.delete(id);
      safeCall(onPublishError, error);
    }
    this._reportError(error);
  }

  _startHeartbeat() {
    const { heartbeatMs, heartbeatTimeoutMs } = this.options;
    if (!(heartbeatMs > 0)) return;
    const ws = this._ws;
    const beat = () => {
      if (this._ws !== ws) return;
      this._activity = false;
      this._sendNow({ type: 'ping' });
      this._pongTimer = setTimeout(() => {
        if (this._ws !== ws) return;
        if (!this._activity) {
          // Any frame counts as life; none within the timeout: the link is dead.
          this._dropConnection();
          this._connectionEnded({ ws, opened: true, welcomed: true }, null, 'heartbeat timeout');
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
  _dropConnection(code = 4000, reason = 'dropped by the client') {
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

  _stopConnection(code, reason) {
    this._connectSeq += 1; // a pending getToken() must not open a socket
    this._dropConnection(code, reason);
    this._byWire.clear();
  }

  _connectionEnded(conn, code, reason) {
    this._stopTimers();
    if (this._ws === conn.ws) this._ws = null;
    const sentHere = new Map(this._byWire);
    this._byWire.clear();
    if (this._closed) return;
    if (conn.httpStatus === 401 || conn.httpStatus === 403) code = conn.httpStatus === 401 ? 4501 : 4502;
    const action = closeAction(code);
    if (action === 'terminal') {
      const meaning = CLOSE_MEANINGS[code] || 'do not reconnect';
      const detail = conn.httpStatus ? `HTTP ${conn.httpStatus}` : `close code ${code}`;
      this._terminate(new PgcastError('rejected', `gateway rejected the connection (${detail}, ${meaning})${reason ? `: ${reason}` : ''}`, {
        closeCode: code,
        hint: code === 4501 || code === 4503 ? 'pass a valid token' : undefined,
      }));
      return;
    }
    if (action === 'frame_too_big') {
      for (const [wireId, sub] of sentHere) {
        if (sub.wireId === wireId && sub.state === 'pending') {
          this._subs.delete(sub.id);
          sub._fail(new PgcastError('frame_too_big', `subscription to ${sub.target}: the gateway refused the subscribe frame as too big (close 1009)`, {
            closeCode: 1009,
            hint: 'use a shorter filter or fewer columns',
          }));
        }
      }
    }
    if (!conn.opened) {
      this._handshakeFailures += 1;
      if (this._canUseSse() && this._handshakeFailures >= this.options.sseAfterFailures) {
        this._switchToSse();
        return;
      }
    }
    if (this._paused) {
      this._setStatus('offline');
      return;
    }
    this._scheduleReconnect();
  }

  _scheduleReconnect() {
    if (this._closed || this._paused) return;
    this._setStatus('offline');
    if (this._delays === null) this._delays = backoff(this._backoffOptions, this.options.random || Math.random);
    const delay = this._delays.next().value;
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = setTimeout(() => this._connect(), delay);
  }

  _terminate(error) {
    this.error = error;
    const subs = [...this._subs.values()];
    this._subs.clear();
    this._byWire.clear();
    const queued = this._outbox;
    this._outbox = [];
    this._closed = true;
    clearTimeout(this._reconnectTimer);
    this._closeSources();
    if (this._onVisibility) this._document.removeEventListener('visibilitychange', this._onVisibility);
    if (registry.get(this.url) === this) registry.delete(this.url);
    this._setStatus('closed');
    for (const sub of subs) sub._fail(error);
    for (const { onError } of queued) safeCall(onError, error);
    for (const onError of this._pendingPublishes.values()) safeCall(onError, error);
    this._pendingPublishes.clear();
    this._reportError(error);
  }

  // -- page visibility

  _pause() {
    if (this._closed || this._paused) return;
    this._paused = true;
    clearTimeout(this._reconnectTimer);
    if (this.transport === 'sse') this._closeSources();
    else this._stopConnection(1000, 'page hidden');
    this._setStatus('offline');
  }

  _resume() {
    if (this._closed || !this._paused) return;
    this._paused = false;
    this._delays = null;
    if (this.transport === 'sse') {
      this._setStatus('connecting');
      for (const sub of this._subs.values()) this._openSource(sub);
    } else {
      this._connect();
    }
  }

  // -- Server-Sent Events fallback

  _canUseSse() {
    return this.options.transport !== 'websocket' && typeof this._EventSource === 'function';
  }

  _switchToSse() {
    this.transport = 'sse';
    this._stopConnection(1000, 'switching to SSE');
    clearTimeout(this._reconnectTimer);
    this._reportError(new PgcastError('sse_fallback', `WebSocket failed ${this._handshakeFailures} times at the handshake; using Server-Sent Events`));
    this._setStatus('connecting');
    for (const sub of this._subs.values()) this._openSource(sub);
    // Publishes cannot go over SSE.
    const queued = this._outbox;
    this._outbox = [];
    for (const { frame, onError } of queued) {
      if (frame.id) this._pendingPublishes.delete(frame.id);
      safeCall(onError, new PgcastError('not_supported', 'publish needs a WebSocket connection; this client fell back to SSE', { id: frame.id }));
    }
  }

  async _openSource(sub, attempt = 0) {
    if (this._closed || this._paused || sub._source || !this._subs.has(sub.id)) return;
    let token = this.options.token;
    if (typeof this.options.getToken === 'function') {
      try {
        token = await this.options.getToken();
      } catch (err) {
        this._reportError(new PgcastError('token', `getToken failed: ${err && err.message ? err.message : err}`));
      }
      if (this._closed || this._paused || sub._source || !this._subs.has(sub.id)) return;
    }
    sub._nextWireId();
    const source = new this._EventSource(sseUrl(this.url, sub.request, { since: sub._since(), token }));
    sub._source = source;
    let opened = false;
    source.onopen = () => {
      opened = true;
      this._updateSseStatus();
    };
    // The gateway names each event after the frame's type (`event: change`); an
    // unnamed event ("message") is accepted too. A named `error` event shares its
    // name with the EventSource's connection error: only the former has data.
    const onFrame = (event) => {
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      if (!frame || typeof frame !== 'object' || sub._source !== source) return;
      this._onSseFrame(sub, source, frame, event.lastEventId);
    };
    source.onmessage = onFrame;
    // 'message' (a channel's NOTIFY) is onmessage itself: not listed again.
    for (const type of ['snapshot', 'change', 'resync', 'subscribed', 'welcome']) {
      source.addEventListener(type, onFrame);
    }
    source.addEventListener('error', (event) => {
      if (typeof event.data === 'string') {
        onFrame(event);
        return;
      }
      if (sub._source !== source) return;
      // readyState 0: the EventSource reconnects by itself with Last-Event-ID.
      // 2 (closed after an HTTP error): a 4xx the runtime lets us see (the
      // eventsource package does, browsers do not) is a refusal; otherwise reopen
      // after a backoff, from the last change id.
      if (source.readyState === 2) {
        sub._source = null;
        const status = typeof event.code === 'number' ? event.code : typeof event.status === 'number' ? event.status : null;
        if (status !== null && status >= 400 && status < 500) {
          this._unregister(sub);
          const code = { 404: 'unknown_table', 403: 'forbidden_channel', 401: 'rejected' }[status] || 'bad_request';
          const error = new PgcastError(code, `subscription to ${sub.target} refused (HTTP ${status})${event.message ? `: ${event.message}` : ''}`);
          sub._fail(error);
          this._reportError(error);
          return;
        }
        const delay = backoffDelay(opened ? 0 : attempt, this._backoffOptions, this.options.random || Math.random);
        setTimeout(() => this._openSource(sub, opened ? 1 : attempt + 1), delay);
      }
      this._updateSseStatus();
    });
  }

  _onSseFrame(sub, source, frame, lastEventId) {
    if (frame.type === 'welcome') {
      if (frame.position != null && this.position === null) this.position = String(frame.position);
      if (frame.position != null && sub.resumeFrom === null && sub.lastId === null && !sub.request.snapshot) {
        sub.resumeFrom = String(frame.position);
      }
      return;
    }
    if (frame.type === 'subscribed' && lastEventId && sub.resumeFrom === null && sub.lastId === null && !sub.isChannel) {
      // Over SSE the log position (welcome's on a WebSocket) is the subscribed event's id.
      sub.resumeFrom = String(lastEventId);
    }
    if (frame.type === 'error') {
      const error = new PgcastError(String(frame.code || 'error'), `subscription to ${sub.target}: ${frame.code}: ${frame.message || ''}`, { frame });
      this._reportError(error);
      if (frame.code === 'unavailable') return; // the stream ends and the EventSource resumes
      this._unregister(sub);
      sub._fail(error);
      return;
    }
    // One stream per subscription: every frame on it is this subscription's.
    this._deliver(sub, frame);
  }

  _updateSseStatus() {
    if (this._closed || this.transport !== 'sse' || this._paused) return;
    const sources = [...this._subs.values()].map((s) => s._source);
    if (sources.length === 0) return;
    if (sources.every((s) => s && s.readyState === 1)) this._setStatus('live');
    else if (sources.some((s) => !s || s.readyState === 2)) this._setStatus('offline');
    else this._setStatus('connecting');
  }

  _closeSources() {
    for (const sub of this._subs.values()) {
      if (sub._source) {
        sub._source.close();
        sub._source = null;
      }
    }
  }
}

// -- factory and per-URL registry -----------------------------------------------------

const registry = new Map();

/** A new client for `options.url` (see the README for every option). */
export function createClient(options = {}) {
  return new Client(options);
}

/**
 * The shared client for `url`: the same instance for the same (normalized) URL
 * until it is closed. `options` apply only when it is created.
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
