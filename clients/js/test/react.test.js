// The hooks, rendered with react-test-renderer against the fake gateway over real
// sockets. Renders are awaited through a probe that records every render.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { createElement, useState } from 'react';
import WebSocket from 'ws';
import { closeAllClients, getClient } from '../pgcast.js';
import { useTable, useChanges, useChannel, usePresence, useBroadcast } from '../react.js';
import { startGateway } from './fake-gateway.js';
import { fastClient, until } from './helpers.js';

// Quiet and synchronous enough for tests: no act() warnings, no deprecation notice.
globalThis.IS_REACT_ACT_ENVIRONMENT = false;
globalThis.IS_REACT_NATIVE_TEST_ENVIRONMENT = true;
const { create } = await import('react-test-renderer');

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
  probe.wait = (check, ms = 5000) => until(probe, 'render', () => probe.latest && check(probe.latest), ms);
  probe.rerender = (props) => rerender(props);
  probe.unmount = () => probe.root.unmount();
  return probe;
}

async function setup(t) {
  const gw = await startGateway();
  // The hooks use the shared client of the URL; create it with the test's WebSocket.
  getClient(gw.url, { WebSocket, backoff: { initialMs: 5, maxMs: 40 } });
  t.after(async () => {
    closeAllClients();
    await gw.stop();
  });
  return gw;
}

const ids = (rows) => rows.map((r) => r.id);

test('useTable: snapshot, then inserts, updates, filter exits, deletes and truncate', async (t) => {
  const gw = await setup(t);
  gw.table('orders', [
    { id: 1, status: 'pending', amount: 5 },
    { id: 2, status: 'shipped', amount: 7 },
    { id: 3, status: 'pending', amount: 9 },
  ]);
  const probe = renderHook(() => useTable('orders', { url: gw.url, filter: 'status=eq.pending' }));
  t.after(() => probe.unmount());
  await probe.wait((r) => r.ready && r.status === 'live');
  assert.deepEqual(probe.history[0].rows, [], 'no rows before the snapshot');
  assert.equal(probe.history[0].ready, false);
  assert.deepEqual(ids(probe.latest.rows), [1, 3]);
  gw.insert('orders', { id: 4, status: 'pending', amount: 1 });
  await probe.wait((r) => r.rows.length === 3);
  gw.update('orders', { id: 1, amount: 6 });
  await probe.wait((r) => r.rows.find((row) => row.id === 1).amount === 6);
  gw.update('orders', { id: 3, status: 'shipped' });
  await probe.wait((r) => ids(r.rows).join() === '1,4');
  gw.update('orders', { id: 2, status: 'pending' });
  await probe.wait((r) => ids(r.rows).join() === '1,4,2');
  gw.delete('orders', 4);
  await probe.wait((r) => ids(r.rows).join() === '1,2');
  gw.truncate('orders');
  await probe.wait((r) => r.rows.length === 0);
  assert.equal(probe.latest.error, null);
  const subscribes = gw.allSessions[0].received.filter((f) => f.type === 'subscribe');
  assert.equal(subscribes.length, 1);
  assert.equal(subscribes[0].snapshot, true);
});

test('useTable: a refused subscription is reported in error', async (t) => {
  const gw = await setup(t);
  const probe = renderHook(() => useTable('missing', { url: gw.url }));
  t.after(() => probe.unmount());
  await probe.wait((r) => r.error);
  assert.equal(probe.latest.error.code, 'unknown_table');
  const bad = renderHook(() => useTable('orders', { url: gw.url, filter: 'status=zz.1' }));
  t.after(() => bad.unmount());
  await bad.wait((r) => r.error);
  assert.equal(bad.latest.error.code, 'bad_filter', 'refused locally, as the gateway would');
});

test('useChanges: callbacks live in refs; re-rendering with new callbacks never resubscribes', async (t) => {
  const gw = await setup(t);
  gw.table('orders');
  const calls = [];
  const called = new EventEmitter();
  const record = (call) => {
    calls.push(call);
    called.emit('call');
  };
  const seen = (n) => until(called, 'call', () => calls.length >= n);
  const probe = renderHook(({ tag = 'first' }) =>
    useChanges('orders', {
      url: gw.url,
      onInsert: (row) => record([tag, 'insert', row.id]),
      onUpdate: (row, old) => record([tag, 'update', row.id, old.status]),
      onDelete: (old) => record([tag, 'delete', old.id]),
    }),
  );
  t.after(() => probe.unmount());
  await probe.wait((r) => r.status === 'live');
  const session = await gw.session(0);
  await session.waitFrame((f) => f.type === 'subscribe');
  gw.insert('orders', { id: 1, status: 'new' });
  await seen(1);
  for (const tag of ['second', 'third', 'fourth']) {
    const before = probe.renders;
    probe.rerender({ tag });
    await probe.wait(() => probe.renders > before);
  }
  gw.update('orders', { id: 1, status: 'paid' });
  gw.delete('orders', 1);
  await seen(3);
  assert.deepEqual(calls, [
    ['first', 'insert', 1],
    ['fourth', 'update', 1, 'new'],
    ['fourth', 'delete', 1],
  ], 'the latest callbacks run');
  assert.equal(session.received.filter((f) => f.type === 'subscribe').length, 1, 'one subscribe for all renders');
  assert.equal(session.received.filter((f) => f.type === 'unsubscribe').length, 0);
  assert.equal(gw.allSessions.length, 1, 'one connection');
});

test('useChannel: messages, publish (not_supported today), one connection shared with useTable', async (t) => {
  const gw = await setup(t);
  gw.table('orders');
  const got = [];
  const channel = renderHook(() => useChannel('system_notifications', (payload) => got.push(payload), { url: gw.url }));
  const table = renderHook(() => useTable('orders', { url: gw.url }));
  t.after(() => {
    channel.unmount();
    table.unmount();
  });
  await table.wait((r) => r.ready);
  const session = gw.allSessions[0];
  await session.waitFrame((f) => f.type === 'subscribe' && f.channel === 'system_notifications');
  gw.notify('system_notifications', 'hello');
  const publishBefore = channel.latest.publish;
  channel.latest.publish({ hi: 1 });
  await channel.wait((r) => r.error);
  assert.equal(channel.latest.error.code, 'not_supported');
  assert.equal(channel.latest.publish, publishBefore, 'publish is stable across renders');
  assert.deepEqual(got, ['hello']);
  const published = await session.waitFrame((f) => f.type === 'publish');
  assert.equal(published.payload, '{"hi":1}');
  assert.equal(gw.allSessions.length, 1, 'both hooks share one connection');
});

test('usePresence: tracks its state while mounted, sees the others, follows updates and leaves', async (t) => {
  const gw = await setup(t);
  const other = fastClient(gw);
  t.after(() => other.close());
  const probe = renderHook((props) => usePresence('room:1', { url: gw.url, key: 'me', state: { mood: props.mood || 'ok' } }));
  await probe.wait((r) => r.presence.me && r.status === 'live');
  assert.equal(probe.latest.presence.me.metas[0].mood, 'ok');
  const room = other.topic('room:1');
  room.track({ mood: 'busy' }, { key: 'them' });
  await probe.wait((r) => r.presence.them);
  probe.rerender({ mood: 'happy' });
  await probe.wait((r) => r.presence.me && r.presence.me.metas[0].mood === 'happy');
  assert.equal(probe.latest.presence.me.metas.length, 1, 'the update replaced the old state');
  other.close();
  await probe.wait((r) => !r.presence.them);
  const left = new Promise((resolve) => gw.on('topic', (f) => f.type === 'leave' && resolve(f)));
  probe.unmount();
  assert.equal((await left).topic, 'room:1', 'the last user of the topic left it');
});

test('useBroadcast: receives the others\' broadcasts and sends its own; shares the topic with usePresence', async (t) => {
  const gw = await setup(t);
  const other = fastClient(gw);
  t.after(() => other.close());
  const events = new EventEmitter();
  const got = [];
  const heard = [];
  const hooks = renderHook(() => ({
    broadcast: useBroadcast('room:2', (event, payload) => got.push([event, payload]) && events.emit('got'), { url: gw.url }),
    presence: usePresence('room:2', { url: gw.url }),
  }));
  t.after(() => hooks.unmount());
  await hooks.wait((r) => r.broadcast.status === 'live');
  const room = other.topic('room:2', { presence: false });
  room.on('broadcast', (event, payload) => heard.push([event, payload]) && events.emit('heard'));
  await new Promise((resolve) => room.on('joined', resolve));
  await until(gw, 'topic', () => gw.sessions.filter((s) => s.topics && s.topics.has('room:2')).length === 2);
  await room.broadcast('typing', { who: 'them' });
  await until(events, 'got', () => got.length === 1);
  assert.deepEqual(got[0], ['typing', { who: 'them' }]);
  await hooks.latest.broadcast.send('typing', { who: 'me' });
  await until(events, 'heard', () => heard.length === 1);
  assert.deepEqual(heard[0], ['typing', { who: 'me' }]);
  const joins = gw.allSessions.flatMap((s) => s.received).filter((f) => f.type === 'join' && f.topic === 'room:2');
  assert.equal(joins.length, 2, 'one join per connection: the two hooks share the topic');
});
