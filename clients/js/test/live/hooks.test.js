// The hooks against a LIVE gateway: rendered with react-test-renderer, over real
// WebSockets (the `ws` package) to a gateway on a real PostgreSQL. Run by
// tests/integration/test_js_live.py, which starts the gateway and passes
//   PGCAST_LIVE_URL      ws://127.0.0.1:<port>/ws
//   PGCAST_LIVE_CONTROL  http://127.0.0.1:<port>: POST /<op> (JSON) performs a write
//                        (reset, insert, update, delete, notify) and answers {rows}.
// Without them every test is skipped (npm test's glob does not include this folder).
// Everything is awaited on events with deadlines, never slept on.
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { createElement, useState } from 'react';
import WebSocket from 'ws';
import { closeAllClients, getClient } from '../../pgcast.js';
import { useTable, useChanges, useChannel } from '../../react.js';
import { until } from '../helpers.js';

globalThis.IS_REACT_ACT_ENVIRONMENT = false;
globalThis.IS_REACT_NATIVE_TEST_ENVIRONMENT = true;
const { create } = await import('react-test-renderer');

const URL = process.env.PGCAST_LIVE_URL;
const CONTROL = process.env.PGCAST_LIVE_CONTROL;
const skip = URL && CONTROL ? false : 'needs a live gateway: run tests/integration/test_js_live.py';
const WAIT_MS = 10000;

/** Ask the Python side to write: returns the rows the statement returned. */
async function db(op, body = {}) {
  const response = await fetch(`${CONTROL}/${op}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(WAIT_MS),
  });
  const answer = await response.json();
  if (!response.ok) throw new Error(`control ${op} failed: ${answer.error}`);
  return answer.rows;
}

/**
 * A `ws` WebSocket that records every frame both ways (`wire.sent`, `wire.received`,
 * parsed) and every socket opened (`wire.sockets`); `wire.wait(check)` re-checks per frame.
 */
function recordingSocket() {
  const wire = new EventEmitter();
  wire.sent = [];
  wire.received = [];
  wire.sockets = 0;
  wire.wait = (check, ms = WAIT_MS) => until(wire, 'frame', check, ms);
  class RecordingWebSocket extends WebSocket {
    constructor(...args) {
      super(...args);
      wire.sockets += 1;
      this.addEventListener('message', (event) => {
        wire.received.push(JSON.parse(String(event.data)));
        wire.emit('frame');
      });
    }
    send(data, ...rest) {
      wire.sent.push(JSON.parse(String(data)));
      wire.emit('frame');
      return super.send(data, ...rest);
    }
  }
  return { RecordingWebSocket, wire };
}

/** The shared client of the live URL (the one every hook uses), on a recording socket. */
function liveClient() {
  const { RecordingWebSocket, wire } = recordingSocket();
  const client = getClient(URL, { WebSocket: RecordingWebSocket, backoff: { initialMs: 5, maxMs: 40 } });
  assert.equal(client.options.WebSocket, RecordingWebSocket, 'a fresh shared client per test');
  return wire;
}

afterEach(() => closeAllClients());

/** Renders `hook` in a component; `probe.latest` is its last result, `probe.wait(check)` awaits a render. */
function renderHook(hook) {
  const probe = new EventEmitter();
  probe.renders = 0;
  probe.history = [];
  let rerender;
  function Probe() {
    const [props, setProps] = useState({});
    rerender = setProps;
    probe.latest = hook(props);
    probe.history.push(probe.latest);
    probe.renders += 1;
    queueMicrotask(() => probe.emit('render', probe.latest));
    return null;
  }
  probe.root = create(createElement(Probe));
  probe.wait = (check, ms = WAIT_MS) => until(probe, 'render', () => probe.latest && check(probe.latest), ms);
  probe.rerender = (props) => rerender(props);
  probe.unmount = () => probe.root.unmount();
  return probe;
}

const ids = (rows) => rows.map((r) => r.id).sort((a, b) => a - b).join();
const subscribes = (frames, match) => frames.filter((f) => f.type === 'subscribe' && match(f));

test('useTable: the snapshot, then an INSERT, UPDATEs in and out of the filter and a DELETE', { skip }, async (t) => {
  const seeded = await db('reset'); // ids 1 (10, pending), 2 (10, shipped), 3 (20, pending)
  assert.deepEqual(seeded.map((r) => [r.id, r.status]), [[1, 'pending'], [2, 'shipped'], [3, 'pending']]);
  const wire = liveClient();
  const probe = renderHook(() => useTable('orders', { url: URL, filter: 'status=eq.pending' }));
  t.after(() => probe.unmount());

  await probe.wait((r) => r.ready && r.status === 'live');
  assert.equal(probe.history[0].ready, false, 'not ready before the snapshot');
  assert.deepEqual(probe.history[0].rows, []);
  assert.deepEqual(
    [...probe.latest.rows].sort((a, b) => a.id - b.id),
    [{ id: 1, merchant_id: 10, status: 'pending' }, { id: 3, merchant_id: 20, status: 'pending' }],
    'the snapshot: the pending rows, every column',
  );

  const [inserted] = await db('insert', { merchant_id: 30, status: 'pending' });
  assert.equal(inserted.id, 4);
  await probe.wait((r) => ids(r.rows) === '1,3,4');
  assert.deepEqual(probe.latest.rows.find((r) => r.id === 4), { id: 4, merchant_id: 30, status: 'pending' });

  // A row outside the filter never shows up: the later UPDATE of row 1 is seen after it.
  await db('insert', { merchant_id: 40, status: 'shipped' }); // id 5
  await db('update', { id: 1, merchant_id: 11 });
  await probe.wait((r) => r.rows.find((row) => row.id === 1)?.merchant_id === 11);
  assert.equal(ids(probe.latest.rows), '1,3,4', 'the shipped insert stays out');

  // An UPDATE that moves a row out of the filter removes it.
  await db('update', { id: 3, status: 'shipped' });
  await probe.wait((r) => ids(r.rows) === '1,4');

  // And one that moves a row in adds it.
  await db('update', { id: 5, status: 'pending' });
  await probe.wait((r) => ids(r.rows) === '1,4,5');

  await db('delete', { id: 4 });
  await probe.wait((r) => ids(r.rows) === '1,5');
  assert.equal(probe.latest.error, null);
  assert.equal(probe.latest.status, 'live');

  const sent = subscribes(wire.sent, (f) => f.table === 'orders');
  assert.equal(sent.length, 1, 'one subscribe for the whole run');
  assert.equal(sent[0].snapshot, true);
  assert.equal(sent[0].filter, 'status=eq.pending');
  assert.equal(wire.sockets, 1, 'one connection');

  probe.unmount();
  await wire.wait(() => wire.sent.some((f) => f.type === 'unsubscribe' && f.id === sent[0].id));
});

test('useChanges: insert/update/delete callbacks; re-rendering with new callbacks never resubscribes', { skip }, async (t) => {
  const wire = liveClient();
  const calls = [];
  const called = new EventEmitter();
  const record = (call) => {
    calls.push(call);
    called.emit('call');
  };
  const seen = (n) => until(called, 'call', () => calls.length >= n, WAIT_MS);
  const probe = renderHook(({ tag = 'first' }) =>
    useChanges('orders', {
      url: URL,
      onInsert: (row) => record([tag, 'insert', row.id, row.status]),
      onUpdate: (row, old) => record([tag, 'update', row.id, old.status, row.status]),
      onDelete: (old) => record([tag, 'delete', old.id, old.status]),
    }),
  );
  t.after(() => probe.unmount());
  await probe.wait((r) => r.status === 'live');
  // Live only (no snapshot): write once the gateway has acknowledged the subscription.
  await wire.wait(() => wire.received.some((f) => f.type === 'subscribed' && f.table === 'orders'));

  const [row] = await db('insert', { merchant_id: 50, status: 'pending' });
  await seen(1);
  for (const tag of ['second', 'third', 'fourth']) {
    const before = probe.renders;
    probe.rerender({ tag });
    await probe.wait(() => probe.renders > before);
  }
  await db('update', { id: row.id, status: 'paid' });
  await db('delete', { id: row.id });
  await seen(3);
  assert.deepEqual(calls, [
    ['first', 'insert', row.id, 'pending'],
    ['fourth', 'update', row.id, 'pending', 'paid'],
    ['fourth', 'delete', row.id, 'paid'],
  ], 'each change once, to the latest callbacks');
  assert.equal(probe.latest.error, null);

  const sent = subscribes(wire.sent, (f) => f.table === 'orders');
  assert.equal(sent.length, 1, 'one subscribe frame across four renders');
  assert.ok(!sent[0].snapshot, 'live only: no snapshot requested');
  assert.equal(wire.sent.filter((f) => f.type === 'unsubscribe').length, 0, 'no unsubscribe either');
  assert.equal(wire.received.filter((f) => f.type === 'subscribed').length, 1, 'the gateway acknowledged one subscription');
  assert.equal(wire.sockets, 1, 'one connection');
});

test('useChannel: a NOTIFY sent in PostgreSQL reaches the callback, payload as sent', { skip }, async (t) => {
  const wire = liveClient();
  const got = [];
  const gotEvents = new EventEmitter();
  const channel = renderHook(() =>
    useChannel('system_notifications', (payload, frame) => {
      got.push([payload, frame.channel]);
      gotEvents.emit('message');
    }, { url: URL }),
  );
  // A table hook on the same URL shares the connection.
  const table = renderHook(() => useTable('orders', { url: URL }));
  t.after(() => {
    channel.unmount();
    table.unmount();
  });
  await table.wait((r) => r.ready);
  // Channels have no log: NOTIFY only once the gateway is LISTENing for us.
  await wire.wait(() => wire.received.some((f) => f.type === 'subscribed' && f.channel === 'system_notifications'));

  await db('notify', { channel: 'system_notifications', payload: 'maintenance at 5' });
  await db('notify', { channel: 'system_notifications', payload: '{"level": "info", "n": 2}' });
  await until(gotEvents, 'message', () => got.length >= 2, WAIT_MS);
  assert.deepEqual(got, [
    ['maintenance at 5', 'system_notifications'],
    ['{"level": "info", "n": 2}', 'system_notifications'],
  ]);
  assert.equal(channel.latest.error, null);
  assert.equal(channel.latest.status, 'live');
  assert.equal(subscribes(wire.sent, (f) => f.channel === 'system_notifications').length, 1);
  assert.equal(wire.sockets, 1, 'both hooks share one connection');
});
