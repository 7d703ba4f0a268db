// The transports as seams, with fakes and no sockets: the SSE transport driven
// through a fake EventSource (frames, positions, refusals, reopening, status), and
// the client's choice of transport (SSE from the start, the fallback after refused
// WebSocket handshakes, none at all).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { createClient } from '../pgcast.js';
import { Recorder, until } from './helpers.js';

const URL_ = 'ws://gateway.test/ws';
const FAST = { initialMs: 1, maxMs: 4, factor: 2, jitter: 0 };

/** An EventSource the test drives: `open()`, `emit(type, frame, id)`, `fail(status)`. */
function fakeEventSource() {
  const created = new EventEmitter();
  const instances = [];
  class FakeEventSource extends EventTarget {
    constructor(url) {
      super();
      this.url = new URL(url);
      this.readyState = 0;
      this.closed = false;
      this.onopen = null;
      this.onmessage = null;
      instances.push(this);
      created.emit('created', this);
    }
    close() {
      this.readyState = 2;
      this.closed = true;
    }
    open() {
      this.readyState = 1;
      if (this.onopen) this.onopen(new Event('open'));
    }
    emit(type, frame, lastEventId = '') {
      const event = new MessageEvent(type, { data: JSON.stringify(frame), lastEventId });
      if (type === 'message') this.onmessage(event);
      else this.dispatchEvent(event);
    }
    /** The stream ended for good (readyState 2), with the HTTP status if the runtime tells it. */
    fail(status) {
      this.readyState = 2;
      const event = new Event('error');
      if (status !== undefined) event.code = status;
      this.dispatchEvent(event);
    }
  }
  const nth = (n) => until(created, 'created', () => instances[n]);
  return { FakeEventSource, instances, nth };
}

/** A WebSocket whose every handshake fails (closed before it opened, no close frame). */
function refusedWebSocket() {
  const sockets = [];
  class RefusedWebSocket {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      sockets.push(this);
      setTimeout(() => this.onclose && this.onclose({ code: 1006, reason: '' }));
    }
    send() {
      throw new Error('not open');
    }
    close() {}
  }
  return { RefusedWebSocket, sockets };
}

function sseClient(t, es, options = {}) {
  const client = createClient({ url: URL_, transport: 'sse', EventSource: es.FakeEventSource, backoff: FAST, ...options });
  const rec = new Recorder().watch(client);
  t.after(() => client.close());
  return { client, rec };
}

/** A client on the fake SSE transport with one `orders` subscription, and its stream. */
async function ordersStream(t, options = {}) {
  const es = fakeEventSource();
  const { client, rec } = sseClient(t, es, options);
  const sub = new Recorder();
  const handle = client.subscribe({ table: 'orders' }, sub.handlers());
  return { es, client, rec, sub, handle, source: await es.nth(0) };
}

const change = (id, record = { id: Number(id) }) => ({ type: 'change', sub: 's1', id, op: 'INSERT', record, old_record: null });

test('SSE transport: one stream per subscription; frames reach their subscription; live once every stream is open', async (t) => {
  const es = fakeEventSource();
  const { client, rec } = sseClient(t, es, { token: 'tk' });
  const orders = new Recorder();
  const news = new Recorder();
  client.subscribe({ table: 'orders', filter: 'status=eq.a' }, orders.handlers());
  client.channel('news').on('message', (f) => news.record('messages', f.payload));
  const [a, b] = [await es.nth(0), await es.nth(1)];
  assert.equal(a.url.pathname, '/sse');
  assert.equal(a.url.searchParams.get('filter'), 'status=eq.a');
  assert.equal(a.url.searchParams.get('token'), 'tk');
  assert.equal(b.url.searchParams.get('channel'), 'news');
  assert.equal(client.transport, 'sse');
  a.open();
  assert.equal(client.status, 'connecting', 'one stream is not open yet');
  b.open();
  assert.equal(client.status, 'live');
  a.emit('welcome', { type: 'welcome', position: '7' });
  a.emit('subscribed', { type: 'subscribed', id: 's1' }, '7');
  a.emit('change', change('8'));
  a.emit('change', change('8')); // replayed after an EventSource reconnect: dropped
  b.emit('message', { type: 'message', sub: 'c2', channel: 'news', payload: 'hi' });
  assert.deepEqual(orders.changeIds, ['8']);
  assert.equal(orders.subscribed.length, 1);
  assert.deepEqual(news.messages, ['hi']);
  assert.equal(client.position, '7', 'the first welcome position');
  assert.deepEqual(rec.errors, []);
});

test('SSE transport: a stream closed for good reopens after a backoff from the last change id', async (t) => {
  const { es, client, rec, sub, handle, source: first } = await ordersStream(t);
  assert.equal(first.url.searchParams.get('since'), null, 'a fresh subscription asks for no position');
  first.open();
  first.emit('subscribed', { type: 'subscribed', id: 's1' }, '3');
  assert.equal(handle.resumeFrom, '3', 'the subscribed event id is the log position');
  first.fail();
  await rec.wait(() => client.status === 'offline');
  const second = await es.nth(1);
  assert.equal(second.url.searchParams.get('since'), '3');
  second.open();
  second.emit('change', change('4'));
  second.fail(502); // a 5xx is not a refusal: open again
  const third = await es.nth(2);
  assert.equal(third.url.searchParams.get('since'), '4', 'resumes after the last delivered change');
  assert.deepEqual(sub.changeIds, ['4']);
  assert.equal(handle.state, 'live');
});

test('SSE transport: an HTTP 4xx refuses the subscription; the others keep streaming', async (t) => {
  const es = fakeEventSource();
  const { client, rec } = sseClient(t, es);
  const missing = new Recorder();
  const kept = new Recorder();
  const refused = client.subscribe({ table: 'missing' }, missing.handlers());
  client.subscribe({ table: 'orders' }, kept.handlers());
  const [a, b] = [await es.nth(0), await es.nth(1)];
  b.open();
  a.fail(404);
  assert.equal(missing.errors[0].code, 'unknown_table');
  assert.match(missing.errors[0].message, /public\.missing refused \(HTTP 404\)/);
  assert.equal(refused.state, 'failed');
  assert.equal(rec.errors[0], missing.errors[0], 'reported to the client too');
  assert.equal(client.status, 'live', 'the refused stream no longer counts');
  const channel = client.channel('secret');
  const errors = new Recorder();
  channel.on('error', (e) => errors.record('errors', e));
  channel.on('message', () => {});
  (await es.nth(2)).fail(403);
  assert.equal(errors.errors[0].code, 'forbidden_channel');
  assert.equal(es.instances.length, 3, 'a refused stream is not opened again');
});

test("SSE transport: an error frame fails its subscription, except 'unavailable' (the stream resumes)", async (t) => {
  const { rec, sub, handle, source } = await ordersStream(t);
  source.open();
  source.emit('error', { type: 'error', id: null, code: 'unavailable', message: 'gateway shutting down' });
  assert.equal(rec.errors[0].code, 'unavailable');
  assert.equal(handle.state, 'pending');
  assert.equal(source.closed, false);
  source.emit('error', { type: 'error', id: null, code: 'bad_filter', message: 'no such column' });
  assert.equal(sub.errors[0].code, 'bad_filter');
  assert.match(sub.errors[0].message, /public\.orders refused: bad_filter: no such column/);
  assert.equal(handle.state, 'failed');
  assert.equal(source.closed, true);
});

test('SSE transport: unsubscribe and page visibility close streams; resuming reopens them from their positions', async (t) => {
  const es = fakeEventSource();
  const doc = new EventTarget();
  doc.hidden = false;
  const { client } = sseClient(t, es, { pauseWhenHidden: true, document: doc });
  const gone = client.subscribe({ table: 'gone' });
  client.subscribe({ table: 'orders' }, {});
  const [a, b] = [await es.nth(0), await es.nth(1)];
  gone.unsubscribe();
  assert.equal(a.closed, true);
  b.open();
  b.emit('change', change('5'));
  assert.equal(client.status, 'live');
  doc.hidden = true;
  doc.dispatchEvent(new Event('visibilitychange'));
  assert.equal(b.closed, true);
  assert.equal(client.status, 'offline');
  doc.hidden = false;
  doc.dispatchEvent(new Event('visibilitychange'));
  const reopened = await es.nth(2);
  assert.equal(reopened.url.searchParams.get('table'), 'orders');
  assert.equal(reopened.url.searchParams.get('since'), '5');
  assert.equal(es.instances.length, 3, 'the unsubscribed stream stays closed');
});

test('SSE transport: publish is refused as not_supported; close stops a pending reopen', async (t) => {
  const es = fakeEventSource();
  const { client, rec } = sseClient(t, es, { backoff: { initialMs: 50, maxMs: 50, jitter: 0 } });
  const errors = new Recorder();
  const channel = client.channel('news');
  channel.on('error', (e) => errors.record('errors', e));
  channel.publish('x');
  await errors.wait(() => errors.errors.length === 1);
  assert.equal(errors.errors[0].code, 'not_supported');
  t.mock.timers.enable({ apis: ['setTimeout'] });
  client.subscribe({ table: 'orders' });
  es.instances[0].fail(); // a reopen is now scheduled in 50 ms
  client.close();
  t.mock.timers.tick(1000);
  assert.equal(es.instances.length, 1, 'no stream opened after close');
  assert.equal(rec.statuses.at(-1), 'closed');
});

test("transport 'auto': refused WebSocket handshakes move every subscription to SSE; queued publishes fail", async (t) => {
  const es = fakeEventSource();
  const ws = refusedWebSocket();
  const client = createClient({ url: URL_, WebSocket: ws.RefusedWebSocket, EventSource: es.FakeEventSource, sseAfterFailures: 3, backoff: FAST });
  t.after(() => client.close());
  const rec = new Recorder().watch(client);
  client.subscribe({ table: 'orders', snapshot: true });
  client.channel('news').on('message', () => {});
  const publishErrors = new Recorder();
  const channel = client.channel('news');
  channel.on('error', (e) => publishErrors.record('errors', e));
  channel.publish('queued while connecting');
  await rec.wait(() => rec.errors.some((e) => e.code === 'sse_fallback'));
  assert.equal(client.transport, 'sse');
  assert.equal(ws.sockets.length, 3, 'exactly sseAfterFailures handshakes');
  await es.nth(1);
  assert.deepEqual(es.instances.map((s) => s.url.searchParams.get('table') ?? s.url.searchParams.get('channel')), ['orders', 'news']);
  assert.equal(es.instances[0].url.searchParams.get('snapshot'), 'true');
  await publishErrors.wait(() => publishErrors.errors.length === 1);
  assert.equal(publishErrors.errors[0].code, 'not_supported');
  es.instances.forEach((s) => s.open());
  assert.equal(client.status, 'live');
});

test("transport 'websocket' never falls back; 'auto' without a WebSocket starts on SSE; neither closes the client", async (t) => {
  const es = fakeEventSource();
  const ws = refusedWebSocket();
  const stubborn = createClient({ url: URL_, transport: 'websocket', WebSocket: ws.RefusedWebSocket, EventSource: es.FakeEventSource, sseAfterFailures: 1, backoff: FAST });
  t.after(() => stubborn.close());
  await until(stubborn, 'status', () => ws.sockets.length >= 4);
  assert.equal(stubborn.transport, 'websocket');
  assert.equal(es.instances.length, 0);

  // As in a runtime that has neither (Node 20; the constructors are passed in).
  const saved = { WebSocket: globalThis.WebSocket, EventSource: globalThis.EventSource };
  Object.assign(globalThis, { WebSocket: undefined, EventSource: undefined });
  t.after(() => Object.assign(globalThis, saved));
  const direct = createClient({ url: URL_, EventSource: es.FakeEventSource });
  t.after(() => direct.close());
  assert.equal(direct.transport, 'sse');
  direct.subscribe({ table: 'orders' });
  await es.nth(0);

  const nothing = createClient({ url: URL_, EventSource: undefined });
  assert.equal(nothing.status, 'closed');
  assert.equal(nothing.error.code, 'no_websocket');
  const noSse = createClient({ url: URL_, transport: 'sse', EventSource: undefined });
  noSse.subscribe({ table: 'orders' });
  assert.equal(noSse.status, 'closed');
  assert.equal(noSse.error.code, 'no_eventsource');
});
