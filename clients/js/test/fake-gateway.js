// A small in-process gateway that speaks docs/protocol.md over WebSocket (the `ws`
// package) and Server-Sent Events, backed by an in-memory change log. It is a test
// double for the JS client: enough of the real gateway's behaviour (welcome
// position, replay from `since` with a duplicate window, resync past the pruned
// mark, snapshot chunks with a position, filters, ping/pong, publish ->
// not_supported) to prove the client's resume, dedupe and mirror logic, plus knobs
// to misbehave (silence, close codes, refused handshakes). Each change gets its own
// txid; with `xidPositions` a snapshot's position is `head:xmax:` as the real
// gateway's (every logged transaction committed), else the bare head id.

import http from 'node:http';
import { once, EventEmitter } from 'node:events';
import { WebSocketServer } from 'ws';
import { parseFilter } from '../pgcast.js';

/** Resolve when `emitter` emits `event` with args satisfying `predicate`, or reject after `ms`. */
export function waitForEvent(emitter, event, predicate = () => true, ms = 5000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.off(event, handler);
      reject(new Error(`timed out after ${ms} ms waiting for '${event}'`));
    }, ms);
    function handler(...args) {
      if (!predicate(...args)) return;
      clearTimeout(timer);
      emitter.off(event, handler);
      resolve(args.length > 1 ? args : args[0]);
    }
    emitter.on(event, handler);
  });
}

/** Resolve once `check()` is truthy, re-checking whenever `emitter` emits `event`. */
export function until(emitter, event, check, ms = 5000) {
  const value = check();
  if (value) return Promise.resolve(value);
  return waitForEvent(emitter, event, () => Boolean(check()), ms).then(() => check());
}

function project(row, columns) {
  if (!row || !columns) return row;
  const out = {};
  for (const c of columns) if (Object.prototype.hasOwnProperty.call(row, c)) out[c] = row[c];
  return out;
}

class Session extends EventEmitter {
  constructor(gateway, kind) {
    super();
    this.gateway = gateway;
    this.kind = kind;
    this.received = [];
    this.sent = [];
    this.subs = new Map();
  }
  /** Wait for a client frame matching `predicate` (already received ones count). */
  waitFrame(predicate, ms = 5000) {
    const found = this.received.find(predicate);
    if (found) return Promise.resolve(found);
    return waitForEvent(this, 'frame', predicate, ms);
  }
}

class WsSession extends Session {
  constructor(gateway, ws, request) {
    super(gateway, 'websocket');
    this.ws = ws;
    this.url = request.url;
    this.closed = false;
    ws.on('message', (data, isBinary) => {
      if (isBinary) return;
      let frame;
      try {
        frame = JSON.parse(data.toString());
      } catch {
        this.send({ type: 'error', id: null, code: 'bad_frame', message: 'not JSON' });
        return;
      }
      this.received.push(frame);
      this.emit('frame', frame);
      gateway._handle(this, frame);
    });
    ws.on('close', (code) => {
      this.closed = true;
      gateway._dropSession(this);
      this.emit('closed', code);
    });
  }
  send(frame) {
    if (this.ws.readyState !== 1) return;
    this.sent.push(frame);
    this.ws.send(JSON.stringify(frame));
  }
  close(code, reason = '') {
    this.ws.close(code, reason);
  }
  /** Drop the TCP connection without a close frame (the client sees 1006). */
  terminate() {
    this.ws.terminate();
  }
}

// Like the gateway's GET /sse (docs/protocol.md, "Server-Sent Events"): headers are
// written with the first event; a refused subscribe is an HTTP error with a JSON
// body; each event is named after its frame's type; `id:` on changes, on
// `subscribed` (the log position, unless after a replay) and on the last snapshot chunk.
const SSE_ERROR_STATUS = { unknown_table: 404, forbidden_channel: 403, unavailable: 503 };

class SseSession extends Session {
  constructor(gateway, res) {
    super(gateway, 'sse');
    this.res = res;
    this.closed = false;
    this.started = false;
    res.on('close', () => {
      this.closed = true;
      gateway._dropSession(this);
      this.emit('closed');
    });
  }
  send(frame) {
    if (this.closed) return;
    this.sent.push(frame);
    if (!this.started) {
      if (frame.type === 'error') {
        this.res.writeHead(SSE_ERROR_STATUS[frame.code] || 400, { 'content-type': 'application/json' });
        this.res.end(JSON.stringify(frame));
        return;
      }
      this.started = true;
      this.res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store' });
      this.res.write('retry: 20\n\n'); // EventSource reconnect delay (the gateway says 1000)
    }
    let id = null;
    if (frame.type === 'change') id = frame.id;
    else if (frame.type === 'snapshot' && frame.done) id = frame.position;
    else if (frame.type === 'subscribed' && frame.replayed === undefined && !frame.channel) {
      id = frame.position ?? this.gateway.head();
    }
    this.res.write(`${id === null ? '' : `id: ${id}\n`}event: ${frame.type}\ndata: ${JSON.stringify(frame)}\n\n`);
  }
  close() {
    this.res.end();
  }
  terminate() {
    this.res.destroy();
  }
}

export class FakeGateway extends EventEmitter {
  constructor(options = {}) {
    super();
    this.options = { chunkSize: 500, duplicateWindow: 0, websocket: true, ...options };
    this.tables = new Map(); // name -> Map(id -> row)
    this.log = []; // {id, table, op, record, old_record}
    this.nextId = 1;
    this.nextTxid = 100;
    this.prunedThrough = 0;
    this.silent = false; // do not answer pings
    this.sessions = [];
    this.allSessions = [];
    this.handshakes = 0;
    this.sseRequests = [];
  }

  async start() {
    this.server = http.createServer((req, res) => this._http(req, res));
    this.wss = new WebSocketServer({ noServer: true });
    this.server.on('upgrade', (req, socket, head) => {
      this.handshakes += 1;
      this.emit('handshake', req);
      if (!this.options.websocket) {
        socket.destroy(); // "WebSockets are blocked"
        return;
      }
      if (this.options.rejectStatus) {
        socket.end(`HTTP/1.1 ${this.options.rejectStatus} Rejected\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
        return;
      }
      this.wss.handleUpgrade(req, socket, head, (ws) => {
        const session = new WsSession(this, ws, req);
        this._addSession(session);
        session.send({ type: 'welcome', version: 1, server: 'pgcast/fake', position: this.head() });
      });
    });
    this.server.listen(0, '127.0.0.1');
    await once(this.server, 'listening');
    const { port } = this.server.address();
    this.url = `ws://127.0.0.1:${port}`;
    this.httpUrl = `http://127.0.0.1:${port}`;
    return this;
  }

  async stop() {
    for (const s of this.sessions) s.terminate();
    this.wss.close();
    this.server.closeAllConnections();
    await new Promise((resolve) => this.server.close(resolve));
  }

  head() {
    return this.log.length ? String(this.log[this.log.length - 1].id) : String(this.nextId - 1);
  }

  /** The nth session ever opened (0-based), waiting for it if needed. */
  session(n, ms = 5000) {
    return until(this, 'session', () => this.allSessions[n], ms);
  }

  get live() {
    return this.sessions;
  }

  // -- data

  table(name, rows = []) {
    const map = new Map(rows.map((r) => [r.id, r]));
    this.tables.set(name, map);
    return map;
  }

  insert(table, record) {
    this.tables.get(table).set(record.id, record);
    return this._append(table, 'INSERT', record, null);
  }

  update(table, record) {
    const rows = this.tables.get(table);
    const old = rows.get(record.id);
    const next = { ...old, ...record };
    rows.set(record.id, next);
    return this._append(table, 'UPDATE', next, old);
  }

  delete(table, id) {
    const rows = this.tables.get(table);
    const old = rows.get(id);
    rows.delete(id);
    return this._append(table, 'DELETE', null, old);
  }

  truncate(table) {
    this.tables.get(table).clear();
    return this._append(table, 'TRUNCATE', null, null);
  }

  /** A raw NOTIFY: a `message` frame to every subscriber of `channel`. */
  notify(channel, payload = '') {
    for (const session of this.sessions) {
      for (const sub of session.subs.values()) {
        if (sub.channel === channel) session.send({ type: 'message', sub: sub.id, channel, payload });
      }
    }
  }

  /** Write a change to the log without delivering it live (as if it happened while a client was away). */
  silently(fn) {
    this._quiet = true;
    try {
      return fn();
    } finally {
      this._quiet = false;
    }
  }

  _append(table, op, record, old) {
    const entry = { id: this.nextId++, txid: this.nextTxid++, table, op, record, old_record: old };
    this.log.push(entry);
    if (!this._quiet) {
      for (const session of this.sessions) {
        for (const sub of session.subs.values()) {
          if (sub.live && sub.table === table) this._deliver(session, sub, entry);
        }
      }
    }
    return String(entry.id);
  }

  _matches(sub, entry) {
    if (sub.events && !sub.events.includes(entry.op)) return false;
    switch (entry.op) {
      case 'INSERT': return sub.filter.matches(entry.record);
      case 'UPDATE': return sub.filter.matches(entry.record) || sub.filter.matches(entry.old_record);
      case 'DELETE': return sub.filter.matches(entry.old_record);
      default: return true;
    }
  }

  _deliver(session, sub, entry) {
    if (!this._matches(sub, entry)) return false;
    session.send({
      type: 'change', sub: sub.id, id: String(entry.id), schema: 'public', table: entry.table, op: entry.op,
      record: project(entry.record, sub.columns), old_record: project(entry.old_record, sub.columns),
      changed: null, txid: String(entry.txid), committed_at: '2026-11-21T12:00:00.000000Z',
    });
    return true;
  }

  // -- protocol

  _addSession(session) {
    this.sessions.push(session);
    this.allSessions.push(session);
    this.emit('session', session);
  }

  _dropSession(session) {
    this.sessions = this.sessions.filter((s) => s !== session);
    for (const [name, { key, meta }] of session.tracked || []) {
      for (const s of this.sessions) {
        if (s.topics && s.topics.has(name) && s.topics.get(name).presence) {
          s.send({ type: 'presence_diff', topic: name, joins: {}, leaves: { [key]: { metas: [meta] } } });
        }
      }
    }
  }

  _handle(session, frame) {
    switch (frame.type) {
      case 'ping':
        if (!this.silent) session.send(frame.data === undefined ? { type: 'pong' } : { type: 'pong', data: frame.data });
        return;
      case 'subscribe':
        return this._subscribe(session, frame);
      case 'unsubscribe':
        if (session.subs.delete(frame.id)) session.send({ type: 'unsubscribed', id: frame.id });
        else session.send({ type: 'error', id: frame.id, code: 'unknown_subscription', message: `no subscription ${frame.id}` });
        return;
      case 'join':
      case 'leave':
      case 'track':
      case 'untrack':
      case 'broadcast':
        return this._topic(session, frame);
      case 'publish':
      case 'auth':
        session.send({ type: 'error', id: typeof frame.id === 'string' ? frame.id : null, code: 'not_supported', message: `${frame.type} is not supported by this version` });
        return;
      default:
        session.send({ type: 'error', id: null, code: 'unknown_type', message: `unknown type ${frame.type}` });
    }
  }

  // Presence and broadcast, as the real gateway answers them (one node).
  _topic(session, frame) {
    const name = frame.topic;
    session.topics ??= new Map();
    const refuse = (code, message) => session.send({ type: 'error', id: null, topic: name, code, message, ...(frame.ref ? { ref: frame.ref } : {}) });
    const members = () => this.sessions.filter((s) => s.topics && s.topics.has(name));
    const diff = (joins, leaves) => {
      for (const s of members()) if (s.topics.get(name).presence) s.send({ type: 'presence_diff', topic: name, joins, leaves });
    };
    const entry = (s) => s.tracked && s.tracked.get(name);
    const untrack = () => {
      const old = entry(session);
      if (!old) return;
      session.tracked.delete(name);
      diff({}, { [old.key]: { metas: [old.meta] } });
    };
    if (frame.type === 'join') {
      if (session.topics.has(name)) return refuse('duplicate_id', `already joined topic '${name}'`);
      const presence = frame.presence !== false;
      session.topics.set(name, { presence, self: !!frame.self, ack: !!frame.ack });
      session.send({ type: 'joined', topic: name, presence, track: true, broadcast: true });
      if (presence) {
        const state = {};
        for (const s of members()) {
          const e = entry(s);
          if (e) (state[e.key] ??= { metas: [] }).metas.push(e.meta);
        }
        session.send({ type: 'presence_state', topic: name, state });
      }
      this.emit('topic', frame);
      return;
    }
    if (!session.topics.has(name)) return refuse('unknown_topic', `join topic '${name}' first`);
    this.emit('topic', frame);
    if (frame.type === 'leave') {
      untrack();
      session.topics.delete(name);
      session.send({ type: 'left', topic: name });
    } else if (frame.type === 'track') {
      untrack();
      this.nextRef = (this.nextRef || 0) + 1;
      const key = frame.key ?? `conn${this.allSessions.indexOf(session)}`;
      const meta = { ...frame.state, phx_ref: `fake.${this.nextRef}` };
      (session.tracked ??= new Map()).set(name, { key, meta });
      diff({ [key]: { metas: [meta] } }, {});
    } else if (frame.type === 'untrack') {
      untrack();
    } else if (frame.type === 'broadcast') {
      if (this.options.refuseBroadcast) return refuse('rate_limited', 'too many broadcasts; slow down');
      for (const s of members()) {
        if (s === session && !s.topics.get(name).self) continue;
        s.send({ type: 'broadcast', topic: name, event: frame.event, payload: frame.payload });
      }
      if (session.topics.get(name).ack) session.send({ type: 'ack', topic: name, ref: frame.ref ?? null });
    }
  }

  _subscribe(session, frame) {
    const id = frame.id;
    const refuse = (code, message) => session.send({ type: 'error', id, code, message });
    if (session.subs.has(id)) return refuse('duplicate_id', `subscription ${id} is already open`);
    if (frame.channel !== undefined) {
      session.subs.set(id, { id, channel: frame.channel, live: true });
      session.send({ type: 'subscribed', id, channel: frame.channel });
      return;
    }
    if (this.options.maxFrameFilter && (frame.filter || '').length > this.options.maxFrameFilter) {
      session.close(1009, 'frame too big');
      return;
    }
    if (frame.snapshot && frame.since != null) return refuse('bad_request', 'snapshot excludes since');
    let filter;
    try {
      filter = parseFilter(frame.filter);
    } catch (err) {
      return refuse('bad_filter', err.message);
    }
    if (!this.tables.has(frame.table)) return refuse('unknown_table', `table '${frame.table}' is not tracked`);
    const sub = { id, table: frame.table, filter, columns: frame.columns, events: frame.events, live: false };
    session.subs.set(id, sub);
    const done = (extra) => {
      sub.live = true;
      session.send({ type: 'subscribed', id, schema: 'public', table: frame.table, ...extra });
    };
    if (frame.since != null) {
      const since = Number(String(frame.since).split(':')[0]);
      if (since < this.prunedThrough) {
        session.send({ type: 'resync', sub: id, reason: `the change log was pruned through id ${this.prunedThrough}` });
        return done({ replayed: 0 });
      }
      let replayed = 0;
      const from = since - this.options.duplicateWindow;
      for (const entry of this.log) {
        if (entry.id > from && entry.table === frame.table && this._deliver(session, sub, entry)) replayed += 1;
      }
      return done({ replayed });
    }
    if (frame.snapshot) {
      const rows = [...this.tables.get(frame.table).values()].filter((r) => filter.matches(r)).map((r) => project(r, frame.columns));
      const position = this.options.xidPositions ? `${this.head()}:${this.nextTxid}:` : this.head();
      const size = this.options.chunkSize;
      let part = 0;
      const stopAfter = this.options.snapshotStopAfter;
      for (let i = 0; i < rows.length || part === 0; i += size) {
        const chunk = rows.slice(i, i + size);
        const last = i + size >= rows.length;
        session.send({ type: 'snapshot', sub: id, part, rows: chunk, done: last, position });
        part += 1;
        if (last) break;
        if (stopAfter && part >= stopAfter) {
          // Misbehave once: cut the connection in the middle of the snapshot.
          this.options.snapshotStopAfter = 0;
          session.terminate();
          return;
        }
      }
      return done({ snapshot_rows: rows.length, position });
    }
    return done({});
  }

  _http(req, res) {
    const url = new URL(req.url, this.httpUrl);
    if (url.pathname !== '/sse') {
      res.writeHead(404).end();
      return;
    }
    this.sseRequests.push({ url, lastEventId: req.headers['last-event-id'] });
    this.emit('sse', url);
    const session = new SseSession(this, res);
    this._addSession(session);
    const q = url.searchParams;
    const since = req.headers['last-event-id'] || q.get('since');
    this._subscribe(session, {
      type: 'subscribe', id: 'sse',
      table: q.get('table') ?? undefined,
      channel: q.get('channel') ?? undefined,
      filter: q.get('filter') ?? undefined,
      columns: q.get('columns') ? q.get('columns').split(',') : undefined,
      events: q.get('events') ? q.get('events').split(',') : undefined,
      since: since ?? undefined,
      snapshot: since == null && q.get('snapshot') === 'true',
    });
  }
}

export async function startGateway(options) {
  return new FakeGateway(options).start();
}
