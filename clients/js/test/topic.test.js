// Presence and broadcast in the JS client, against the fake gateway over real sockets.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { applyPresenceDiff, PgcastError } from '../pgcast.js';
import { startGateway } from './fake-gateway.js';
import { fastClient, until } from './helpers.js';

async function setup(t, options) {
  const gateway = await startGateway(options);
  const clients = [];
  t.after(async () => {
    for (const c of clients) c.close();
    await gateway.stop();
  });
  const client = (opts) => {
    const c = fastClient(gateway, opts);
    clients.push(c);
    return c;
  };
  return { gateway, client };
}

/** Records a topic's events; `wait(check)` re-checks on each. */
function record(topic) {
  const log = new EventEmitter();
  log.events = [];
  for (const kind of ['sync', 'join', 'leave', 'broadcast', 'error', 'joined']) {
    topic.on(kind, (...args) => {
      log.events.push([kind, ...args]);
      log.emit('event');
    });
  }
  log.of = (kind) => log.events.filter((e) => e[0] === kind).map((e) => e.slice(1));
  log.wait = (check, ms = 5000) => until(log, 'event', check, ms);
  return log;
}

test('applyPresenceDiff removes left metas by ref and adds joins', () => {
  const state = { a: { metas: [{ phx_ref: '1' }, { phx_ref: '2' }] }, b: { metas: [{ phx_ref: '3' }] } };
  const next = applyPresenceDiff(state, { c: { metas: [{ phx_ref: '4', x: 1 }] } }, { a: { metas: [{ phx_ref: '1' }] }, b: { metas: [{ phx_ref: '3' }] } });
  assert.deepEqual(next, { a: { metas: [{ phx_ref: '2' }] }, c: { metas: [{ phx_ref: '4', x: 1 }] } });
  assert.deepEqual(state.a.metas.length, 2, 'the old state is not changed');
  assert.deepEqual(applyPresenceDiff(next, { c: { metas: [{ phx_ref: '4', x: 1 }] } }, {}), next, 'a repeated join is not doubled');
});

test('presence syncs between two clients and leaves when one disconnects', async (t) => {
  const { client } = await setup(t);
  const alice = client();
  const bob = client();
  const aliceRoom = alice.topic('room:1');
  const bobRoom = bob.topic('room:1');
  const bobLog = record(bobRoom);
  await until(record(aliceRoom), 'event', () => aliceRoom.state === 'joined');
  await bobLog.wait(() => bobRoom.state === 'joined');
  aliceRoom.track({ status: 'online' }, { key: 'alice' });
  await bobLog.wait(() => bobRoom.presence.alice);
  assert.equal(bobRoom.presence.alice.metas[0].status, 'online');
  assert.deepEqual(bobLog.of('join').map((e) => e[0]), ['alice']);
  alice.close();
  await bobLog.wait(() => bobLog.of('leave').length === 1);
  assert.deepEqual(bobRoom.presence, {});
});

test('the tracked state is re-sent after a reconnect', async (t) => {
  const { gateway, client } = await setup(t);
  const alice = client();
  const bob = client();
  const room = alice.topic('room:1');
  const watcher = bob.topic('room:1');
  const log = record(watcher);
  room.track({ typing: true }, { key: 'alice' });
  await log.wait(() => watcher.presence.alice);
  // Drop alice's socket: her entry leaves, then comes back on its own.
  const session = gateway.sessions.find((s) => s.tracked && s.tracked.size);
  session.terminate();
  await log.wait(() => log.of('leave').length === 1);
  await log.wait(() => log.of('join').length === 2 && watcher.presence.alice);
  assert.equal(watcher.presence.alice.metas[0].typing, true);
});

test('broadcast reaches the other members; self and ack on request', async (t) => {
  const { client } = await setup(t);
  const a = client().topic('room:1', { presence: false, self: true, ack: true });
  const b = client().topic('room:1', { presence: false });
  const aLog = record(a);
  const bLog = record(b);
  await aLog.wait(() => a.state === 'joined');
  await bLog.wait(() => b.state === 'joined');
  await a.broadcast('cursor', { x: 1 }); // resolves on the ack
  await bLog.wait(() => bLog.of('broadcast').length === 1);
  assert.deepEqual(bLog.of('broadcast')[0], ['cursor', { x: 1 }]);
  await aLog.wait(() => aLog.of('broadcast').length === 1);
  await b.broadcast('typing', null);
  await aLog.wait(() => aLog.of('broadcast').length === 2);
  assert.equal(bLog.of('broadcast').length, 1, 'b did not ask for its own');
});

test('a refused broadcast rejects with the gateway error', async (t) => {
  const { client } = await setup(t, { refuseBroadcast: true });
  const a = client().topic('room:1', { ack: true });
  const log = record(a);
  await log.wait(() => a.state === 'joined');
  await assert.rejects(a.broadcast('e', 1), (err) => err instanceof PgcastError && err.code === 'rate_limited');
});

test('broadcast while offline rejects; track while offline is sent on connect', async (t) => {
  const { gateway, client } = await setup(t);
  const c = client();
  const topic = c.topic('room:1');
  await assert.rejects(topic.broadcast('e', 1), (err) => err.code === 'offline');
  topic.track({ early: true }, { key: 'k' });
  const other = client().topic('room:1');
  const log = record(other);
  await log.wait(() => other.presence.k);
  assert.equal(gateway.sessions.length, 2);
  assert.throws(() => topic.track('not an object'), PgcastError);
});

test('closing a topic leaves it; the same name makes a new topic', async (t) => {
  const { gateway, client } = await setup(t);
  const c = client();
  const topic = c.topic('room:1');
  assert.equal(c.topic('room:1'), topic, 'one Topic per name');
  await until(record(topic), 'event', () => topic.state === 'joined');
  const left = new Promise((resolve) => gateway.on('topic', (f) => f.type === 'leave' && resolve(f)));
  topic.close();
  assert.equal((await left).topic, 'room:1');
  assert.notEqual(c.topic('room:1'), topic);
  await assert.rejects(topic.broadcast('e', 1), (err) => err.code === 'closed');
});

test('over SSE a topic reports not_supported', async (t) => {
  const { EventSource } = await import('eventsource');
  const { client } = await setup(t);
  const c = client({ transport: 'sse', EventSource });
  const topic = c.topic('room:1');
  const log = record(topic);
  await log.wait(() => log.of('error').length === 1);
  assert.equal(log.of('error')[0][0].code, 'not_supported');
});
