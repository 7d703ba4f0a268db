// The client against a fake gateway speaking the protocol over real sockets:
// resume, dedupe, queueing, close codes, heartbeat, snapshots, resync, tokens,
// page visibility, the SSE fallback, and the per-URL registry.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { EventSource } from 'eventsource';
import { getClient, closeAllClients, PgcastError } from '../pgcast.js';
import { startGateway } from './fake-gateway.js';
import { Recorder, fastClient, deferred, until } from './helpers.js';

async function setup(t, gatewayOptions = {}, clientOptions = {}) {
  const gw = await startGateway(gatewayOptions);
  const client = fastClient(gw, clientOptions);
  const rec = new Recorder().watch(client);
  t.after(async () => {
    client.close();
    await gw.stop();
  });
  return { gw, client, rec };
}

const subscribeFrames = (session) => session.received.filter((f) => f.type === 'subscribe');

test('subscribe delivers changes and reports subscribed', async (t) => {
  const { gw, client, rec } = await setup(t);
  gw.table('orders');
  client.subscribe({ table: 'orders', filter: 'status=eq.pending' }, rec.handlers());
  await rec.wait(() => rec.subscribed.length === 1);
  assert.equal(client.status, 'live');
  gw.insert('orders', { id: 1, status: 'pending' });
  gw.insert('orders', { id: 2, status: 'shipped' });
  gw.insert('orders', { id: 3, status: 'pending' });
  await rec.wait(() => rec.changes.length === 2);
  assert.deepEqual(rec.changes.map((c) => c.record.id), [1, 3]);
  const frame = subscribeFrames(gw.allSessions[0])[0];
  assert.deepEqual(frame, { type: 'subscribe', id: 's1', table: 'orders', filter: 'status=eq.pending' });
});

test('resume after a 4001 close: since = last change id, replayed duplicates dropped, nothing lost', async (t) => {
  const { gw, client, rec } = await setup(t, { duplicateWindow: 3 });
  gw.table('orders');
  client.subscribe({ table: 'orders' }, rec.handlers());
  await rec.wait(() => rec.subscribed.length === 1);
  for (let i = 1; i <= 4; i++) gw.insert('orders', { id: i });
  await rec.wait(() => rec.changes.length === 4);
  const first = gw.allSessions[0];
  first.close(4001, 'outbox overflow: reconnect and resume');
  await rec.wait(() => rec.statuses.includes('offline'));
  gw.silently(() => {
    gw.insert('orders', { id: 5 });
    gw.update('orders', { id: 2, note: 'x' });
  });
  const second = await gw.session(1);
  const resubscribe = await second.waitFrame((f) => f.type === 'subscribe');
  assert.equal(resubscribe.since, '4', 'resumes after the last delivered change');
  assert.equal(resubscribe.id, 's1-2', 'a fresh wire id per resubscribe');
  await rec.wait(() => rec.changes.length === 6);
  await rec.wait(() => rec.subscribed.length === 2);
  assert.deepEqual(rec.changeIds, ['1', '2', '3', '4', '5', '6'], 'each change exactly once, in order');
  const replayed = second.sent.filter((f) => f.type === 'change').map((f) => f.id);
  assert.deepEqual(replayed, ['2', '3', '4', '5', '6'], 'the gateway did replay duplicates (window 3)');
  assert.equal(client.status, 'live');
});

test('resume after an abrupt drop (1006) before any change: since = the welcome position', async (t) => {
  const { gw, client, rec } = await setup(t);
  gw.table('orders');
  gw.silently(() => {
    for (let i = 1; i <= 3; i++) gw.insert('orders', { id: i });
  });
  client.subscribe({ table: 'orders' }, rec.handlers());
  await rec.wait(() => rec.subscribed.length === 1);
  assert.equal(client.position, '3');
  gw.allSessions[0].terminate();
  await rec.wait(() => rec.statuses.includes('offline'));
  gw.silently(() => gw.insert('orders', { id: 4 }));
  const second = await gw.session(1);
  const resubscribe = await second.waitFrame((f) => f.type === 'subscribe');
  assert.equal(resubscribe.since, '3');
  await rec.wait(() => rec.changes.length === 1);
  assert.deepEqual(rec.changeIds, ['4'], 'the change committed while disconnected arrives; older ones do not');
});

test('no reconnect after 4501: the client closes and reports the reason', async (t) => {
  const { gw, client, rec } = await setup(t);
  gw.table('orders');
  client.subscribe({ table: 'orders' }, rec.handlers());
  await rec.wait(() => rec.subscribed.length === 1);
  gw.allSessions[0].close(4501, 'bad token');
  await rec.wait(() => client.status === 'closed');
  const error = rec.errors.find((e) => e.closeCode === 4501);
  assert.ok(error instanceof PgcastError);
  assert.match(error.message, /unauthorized.*bad token/);
  assert.equal(client.error, error);
  assert.ok(!rec.statuses.includes('connecting'), 'never tried to connect again');
  // A second client connecting now proves the server is up; the first stays away.
  const other = fastClient(gw);
  t.after(() => other.close());
  await until(other, 'status', () => other.status === 'live');
  assert.equal(gw.handshakes, 2);
  const late = new Recorder();
  client.subscribe({ table: 'orders' }, late.handlers());
  await late.wait(() => late.errors.length === 1);
  assert.equal(late.errors[0].closeCode, 4501);
});

test('an HTTP 401 on the upgrade is a 4501: no reconnect', async (t) => {
  const { client, rec } = await setup(t, { rejectStatus: 401 });
  await rec.wait(() => client.status === 'closed');
  assert.equal(client.error.closeCode, 4501);
  assert.match(client.error.message, /HTTP 401/);
});

test('heartbeat: a silent server is detected and the client reconnects and resumes', async (t) => {
  const { gw, client, rec } = await setup(t, {}, { heartbeatMs: 30, heartbeatTimeoutMs: 60 });
  gw.table('orders');
  client.subscribe({ table: 'orders' }, rec.handlers());
  await rec.wait(() => rec.subscribed.length === 1);
  const first = gw.allSessions[0];
  await first.waitFrame((f) => f.type === 'ping');
  await first.waitFrame((f) => f.type === 'ping' && first.received.filter((x) => x.type === 'ping').length >= 2);
  assert.equal(rec.statuses.includes('offline'), false, 'answered pings keep the connection');
  gw.silent = true;
  await rec.wait(() => rec.statuses.includes('offline'));
  gw.silent = false;
  const second = await gw.session(1);
  await second.waitFrame((f) => f.type === 'subscribe');
  await rec.wait(() => client.status === 'live');
  await until(first, 'closed', () => first.closed);
});

test('messages published while offline are queued (bounded) and flushed in order on welcome', async (t) => {
  const gate = deferred();
  let calls = 0;
  const getToken = async () => {
    calls += 1;
    if (calls === 1) await gate.promise; // hold the first connect: the client is offline
    return `t${calls}`;
  };
  const { gw, client, rec } = await setup(t, {}, { getToken, queueSize: 2 });
  const channel = client.channel('system_notifications');
  const channelErrors = [];
  channel.on('error', (e) => channelErrors.push(e));
  assert.equal(client.status, 'connecting');
  channel.publish({ n: 1 });
  channel.publish({ n: 2 });
  channel.publish('three');
  await rec.wait(() => rec.errors.some((e) => e.code === 'queue_full'));
  assert.equal(channelErrors[0].code, 'queue_full', 'the oldest queued message is dropped and reported');
  gate.resolve();
  const session = await gw.session(0);
  assert.match(session.url, /token=t1/);
  await session.waitFrame((f) => f.type === 'publish' && f.payload === 'three');
  const published = session.received.filter((f) => f.type === 'publish').map((f) => f.payload);
  assert.deepEqual(published, ['{"n":2}', 'three']);
  // Today's gateway answers publish with not_supported: surfaced to the channel.
  await rec.wait(() => rec.errors.filter((e) => e.code === 'not_supported').length === 2);
  assert.deepEqual(channelErrors.map((e) => e.code), ['queue_full', 'not_supported', 'not_supported']);
});

test('channel messages reach listeners; the last listener unsubscribes', async (t) => {
  const { gw, client } = await setup(t);
  const channel = client.channel('system_notifications');
  const rec = new Recorder();
  channel.on('subscribed', (f) => rec.record('subscribed', f));
  const off = channel.on('message', (f) => rec.record('messages', f.payload));
  await rec.wait(() => rec.subscribed.length === 1);
  gw.notify('system_notifications', '{"level":"warn"}');
  const session = gw.allSessions[0];
  await rec.wait(() => rec.messages.length === 1);
  assert.deepEqual(rec.messages, ['{"level":"warn"}']);
  off();
  const unsub = await session.waitFrame((f) => f.type === 'unsubscribe');
  assert.equal(unsub.id, 'c1');
});

test('getToken is awaited before every connect and the token goes in the query string', async (t) => {
  let n = 0;
  const { gw, client } = await setup(t, {}, { getToken: async () => `tok ${++n}` });
  const first = await gw.session(0);
  assert.ok(first.url.endsWith('/ws?token=tok%201'));
  await until(client, 'status', () => client.status === 'live');
  first.close(4000, 'gateway shutting down: reconnect and resume');
  const second = await gw.session(1);
  assert.ok(second.url.endsWith('/ws?token=tok%202'));
});

test('a snapshot cut before done starts over at part 0; the mirror holds each row once', async (t) => {
  const { gw, client, rec } = await setup(t, { chunkSize: 2, snapshotStopAfter: 2 });
  gw.table('orders', [1, 2, 3, 4, 5].map((id) => ({ id, status: id % 2 ? 'pending' : 'shipped' })));
  const rows = new Recorder();
  const watch = client.watchTable({ table: 'orders' }, { onRows: (r) => rows.record('snapshots', r) });
  t.after(() => watch.unsubscribe());
  const second = await gw.session(1);
  const again = await second.waitFrame((f) => f.type === 'subscribe');
  assert.equal(again.snapshot, true, 'not done: snapshot again');
  assert.equal(again.since, undefined);
  const firstParts = gw.allSessions[0].sent.filter((f) => f.type === 'snapshot').map((f) => f.part);
  assert.deepEqual(firstParts, [0, 1], 'the first snapshot was cut after two chunks');
  await rows.wait(() => rows.snapshots.length === 1);
  assert.deepEqual(watch.mirror.rows().map((r) => r.id), [1, 2, 3, 4, 5]);
  assert.deepEqual(rows.snapshots[0].map((r) => r.id), [1, 2, 3, 4, 5], 'rows became visible once, complete');
  // After a complete snapshot a reconnect resumes from its position, no second snapshot.
  gw.silently(() => gw.insert('orders', { id: 6, status: 'pending' }));
  second.terminate();
  const third = await gw.session(2);
  const resume = await third.waitFrame((f) => f.type === 'subscribe');
  assert.equal(resume.snapshot, undefined);
  assert.equal(resume.since, '0', 'the snapshot position');
  await rows.wait(() => rows.snapshots.length === 2);
  assert.deepEqual(rows.snapshots[1].map((r) => r.id), [1, 2, 3, 4, 5, 6]);
  assert.equal(rec.errors.length, 0);
});

test('a resume by id after a snapshot drops replayed changes the snapshot holds; the mirror never goes back', async (t) => {
  // The replay window reaches before the snapshot (as a long transaction elsewhere
  // in the cluster makes the real gateway's do): change 1 is older than the
  // snapshot, its id was never delivered, so only the snapshot position catches it.
  const { gw, client, rec } = await setup(t, { duplicateWindow: 3, xidPositions: true });
  gw.table('items', [{ id: 1, v: 0 }, { id: 2, v: 0 }]);
  const before = gw.update('items', { id: 1, v: 1 });
  const watch = client.watchTable({ table: 'items' }, {
    onChange: (f) => rec.record('changes', f),
    onSubscribed: (f) => rec.record('subscribed', f),
  });
  t.after(() => watch.unsubscribe());
  await rec.wait(() => rec.subscribed.length === 1);
  assert.deepEqual(watch.mirror.rows(), [{ id: 1, v: 1 }, { id: 2, v: 0 }]);
  gw.update('items', { id: 1, v: 2 });
  const since = gw.update('items', { id: 2, v: 1 });
  await rec.wait(() => rec.changes.length === 2);
  gw.allSessions[0].terminate();
  const second = await gw.session(1);
  const resume = await second.waitFrame((f) => f.type === 'subscribe');
  assert.equal(resume.since, since);
  await rec.wait(() => rec.subscribed.length === 2);
  const replayed = second.sent.filter((f) => f.type === 'change').map((f) => f.id);
  assert.ok(replayed.includes(before), 'the replay did re-send the change older than the snapshot');
  gw.update('items', { id: 2, v: 9 });
  await rec.wait(() => watch.mirror.get(2)?.v === 9);
  assert.ok(!rec.changeIds.includes(before), `change ${before} predates the snapshot and was delivered`);
  assert.deepEqual(watch.mirror.rows(), [{ id: 1, v: 2 }, { id: 2, v: 9 }]);
  assert.equal(watch.subscription.duplicates, 3);
  assert.equal(rec.errors.length, 0);
});

test('since given as a position: changes that position holds are not delivered', async (t) => {
  const { gw, client, rec } = await setup(t, { duplicateWindow: 1, xidPositions: true });
  gw.table('items', [{ id: 1, v: 0 }]);
  gw.update('items', { id: 1, v: 1 }); // id 1, txid 100: held by 1:101:
  gw.update('items', { id: 1, v: 2 }); // id 2: above the head
  const sub = client.subscribe({ table: 'items', since: '1:101:' }, rec.handlers());
  await rec.wait(() => rec.subscribed.length === 1);
  assert.equal(gw.allSessions[0].sent.filter((f) => f.type === 'change').length, 2, 'the fake replays from id 1');
  assert.deepEqual(rec.changeIds, ['2']);
  assert.equal(sub.duplicates, 1);
});

test('resync: the gateway pruned past our position, the mirror re-snapshots and converges', async (t) => {
  const { gw, client, rec } = await setup(t);
  gw.table('orders', [{ id: 1, status: 'pending' }, { id: 2, status: 'pending' }]);
  const resyncs = [];
  client.on('resync', (frame) => resyncs.push(frame));
  const watch = client.watchTable({ table: 'orders', filter: 'status=eq.pending' }, {
    onRows: (r) => rec.record('snapshots', r),
  });
  t.after(() => watch.unsubscribe());
  await rec.wait(() => rec.snapshots.length === 1);
  gw.update('orders', { id: 1, status: 'shipped' });
  await rec.wait(() => watch.mirror.size === 1);
  gw.allSessions[0].terminate();
  await rec.wait(() => client.status === 'offline');
  gw.silently(() => {
    gw.delete('orders', 2);
    gw.insert('orders', { id: 3, status: 'pending' });
  });
  gw.prunedThrough = 1000;
  await rec.wait(() => watch.mirror.size === 1 && watch.mirror.get(3) !== undefined);
  assert.equal(resyncs.length, 1);
  assert.deepEqual(watch.mirror.rows(), [{ id: 3, status: 'pending' }]);
  const second = gw.allSessions[1];
  const subs = subscribeFrames(second);
  assert.equal(subs[0].since, '1');
  assert.equal(subs[1].snapshot, true);
  assert.ok(second.received.some((f) => f.type === 'unsubscribe' && f.id === subs[0].id));
});

test('after a resync, a resubscribe resumes from the position it gave, not with another resync', async (t) => {
  const { gw, client, rec } = await setup(t);
  gw.table('orders');
  gw.silently(() => {
    for (let i = 1; i <= 3; i++) gw.insert('orders', { id: i });
  });
  gw.prunedThrough = 3;
  client.subscribe({ table: 'orders', since: '1' }, rec.handlers());
  await rec.wait(() => rec.subscribed.length === 1);
  assert.equal(rec.resyncs.length, 1);
  assert.equal(rec.resyncs[0].position, '3');
  gw.allSessions[0].terminate();
  const second = await gw.session(1);
  const resubscribe = await second.waitFrame((f) => f.type === 'subscribe');
  assert.equal(resubscribe.since, '3', 'the position the stream continued from');
  await rec.wait(() => rec.subscribed.length === 2);
  assert.equal(rec.resyncs.length, 1, 'no second resync');
  gw.insert('orders', { id: 4 });
  await rec.wait(() => rec.changes.length === 1);
  assert.deepEqual(rec.changeIds, ['4']);
});

test('a refused subscribe reports the gateway error and is not retried', async (t) => {
  const { gw, client, rec } = await setup(t);
  gw.table('orders');
  client.subscribe({ table: 'orders', filter: 'status=zz.1' }, rec.handlers());
  client.subscribe({ table: 'nope' }, rec.handlers());
  await rec.wait(() => rec.errors.length >= 4); // two subscriptions, each via onError and the client 'error' event
  const codes = rec.errors.map((e) => e.code).sort();
  assert.deepEqual(codes, ['bad_filter', 'bad_filter', 'unknown_table', 'unknown_table']);
  gw.allSessions[0].close(4000);
  const second = await gw.session(1);
  await until(client, 'status', () => client.status === 'live');
  assert.equal(subscribeFrames(second).length, 0);
});

test('close 1009 fails only the subscribe that was unanswered; the others resume', async (t) => {
  const { gw, client, rec } = await setup(t, { maxFrameFilter: 100 });
  gw.table('orders');
  const ok = new Recorder();
  client.subscribe({ table: 'orders' }, ok.handlers());
  await ok.wait(() => ok.subscribed.length === 1);
  client.subscribe({ table: 'orders', filter: `status=in.(${'x,'.repeat(60)}y)` }, rec.handlers());
  await rec.wait(() => rec.errors.some((e) => e.code === 'frame_too_big'));
  const second = await gw.session(1);
  const frames = await until(second, 'frame', () => subscribeFrames(second).length === 1 && subscribeFrames(second));
  assert.equal(frames[0].table, 'orders');
  assert.equal(frames[0].filter, undefined);
  gw.insert('orders', { id: 1 });
  await ok.wait(() => ok.changes.length === 1);
});

test('pauseWhenHidden disconnects while the page is hidden and resumes when visible', async (t) => {
  const doc = new EventTarget();
  doc.hidden = false;
  const { gw, client, rec } = await setup(t, {}, { pauseWhenHidden: true, document: doc });
  gw.table('orders');
  client.subscribe({ table: 'orders' }, rec.handlers());
  await rec.wait(() => rec.subscribed.length === 1);
  gw.insert('orders', { id: 1 });
  await rec.wait(() => rec.changes.length === 1);
  doc.hidden = true;
  doc.dispatchEvent(new Event('visibilitychange'));
  assert.equal(client.status, 'offline');
  const first = gw.allSessions[0];
  await until(first, 'closed', () => first.closed);
  gw.insert('orders', { id: 2 });
  assert.equal(gw.allSessions.length, 1, 'no reconnect while hidden');
  doc.hidden = false;
  doc.dispatchEvent(new Event('visibilitychange'));
  const second = await gw.session(1);
  const resubscribe = await second.waitFrame((f) => f.type === 'subscribe');
  assert.equal(resubscribe.since, '1');
  await rec.wait(() => rec.changes.length === 2);
  assert.deepEqual(rec.changeIds, ['1', '2']);
});

test('SSE fallback: after repeated handshake failures, one EventSource per subscription, resumed with Last-Event-ID', async (t) => {
  const { gw, client, rec } = await setup(t, { websocket: false }, { EventSource, sseAfterFailures: 2 });
  gw.table('orders', [{ id: 1, status: 'a' }]);
  const sub = new Recorder();
  client.subscribe({ table: 'orders', filter: 'status=eq.a', snapshot: true }, sub.handlers());
  await rec.wait(() => rec.errors.some((e) => e.code === 'sse_fallback'));
  assert.equal(client.transport, 'sse');
  assert.equal(gw.handshakes, 2);
  await sub.wait(() => sub.subscribed.length === 1);
  await rec.wait(() => client.status === 'live');
  assert.equal(sub.snapshots[0].rows.length, 1);
  const request = gw.sseRequests[0].url;
  assert.equal(request.searchParams.get('table'), 'orders');
  assert.equal(request.searchParams.get('filter'), 'status=eq.a');
  assert.equal(request.searchParams.get('snapshot'), 'true');
  gw.insert('orders', { id: 2, status: 'a' });
  await sub.wait(() => sub.changes.length === 1);
  // Cut the stream: the EventSource reconnects by itself with Last-Event-ID.
  gw.allSessions[0].terminate();
  gw.silently(() => gw.insert('orders', { id: 3, status: 'a' }));
  await sub.wait(() => sub.changes.length === 2);
  assert.equal(gw.sseRequests[1].lastEventId, '1', 'the last change id it delivered');
  assert.deepEqual(sub.changeIds, ['1', '2']);
  // Publishing needs a WebSocket: reported to the channel, not silently lost.
  const channel = client.channel('system_notifications');
  const errors = new Recorder();
  channel.on('error', (e) => errors.record('errors', e));
  channel.publish('p');
  await errors.wait(() => errors.errors.length === 1);
  assert.equal(errors.errors[0].code, 'not_supported');
});

test('getClient shares one client per URL until it is closed', async (t) => {
  const gw = await startGateway();
  t.after(async () => {
    closeAllClients();
    await gw.stop();
  });
  const a = getClient(gw.url, { WebSocket });
  const b = getClient(`${gw.httpUrl}/ws`);
  assert.equal(a, b);
  await until(a, 'status', () => a.status === 'live');
  a.close();
  assert.equal(a.status, 'closed');
  const c = getClient(gw.url, { WebSocket });
  assert.notEqual(c, a);
});

test('SSE: a refused stream (HTTP 404) fails the subscription; channel messages arrive once', async (t) => {
  const { gw, client, rec } = await setup(t, {}, { EventSource, transport: 'sse' });
  const missing = new Recorder();
  client.subscribe({ table: 'missing' }, missing.handlers());
  await missing.wait(() => missing.errors.length === 1);
  assert.equal(missing.errors[0].code, 'unknown_table');
  assert.match(missing.errors[0].message, /HTTP 404/);
  const channel = client.channel('system_notifications');
  const got = new Recorder();
  channel.on('subscribed', (f) => got.record('subscribed', f));
  channel.on('message', (f) => got.record('messages', f.payload));
  await got.wait(() => got.subscribed.length === 1);
  gw.notify('system_notifications', 'one');
  gw.notify('system_notifications', 'two');
  await got.wait(() => got.messages.length === 2);
  assert.deepEqual(got.messages, ['one', 'two']);
  assert.equal(gw.handshakes, 0, 'never tried a WebSocket');
  assert.equal(client.status, 'live');
  assert.ok(!rec.errors.some((e) => e.code === 'unknown_table' && e !== missing.errors[0]));
});

test('SSE: a stream without snapshot resumes from its subscribed position when reopened', async (t) => {
  const { gw, client } = await setup(t, {}, { EventSource, transport: 'sse' });
  gw.table('orders');
  gw.silently(() => gw.insert('orders', { id: 1 }));
  const sub = new Recorder();
  const handle = client.subscribe({ table: 'orders' }, sub.handlers());
  await sub.wait(() => sub.subscribed.length === 1);
  assert.equal(handle.resumeFrom, '1', 'the subscribed event id is the log position');
  // A fatal stream error (closed EventSource): the client reopens it itself, with since.
  const source = handle._source;
  gw.silently(() => gw.insert('orders', { id: 2 }));
  source.close();
  source.dispatchEvent(new Event('error'));
  await sub.wait(() => sub.changes.length === 1);
  assert.equal(gw.sseRequests[1].url.searchParams.get('since'), '1');
  assert.deepEqual(sub.changeIds, ['2']);
});
