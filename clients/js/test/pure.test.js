// Pure pieces: backoff, close-code policy, duplicate ids, URLs, the table mirror.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  backoff, backoffDelay, closeAction, RecentIds, normalizeUrl, sseUrl, TableMirror, DEFAULT_BACKOFF,
} from '../pgcast.js';
import { Position } from '../src/position.js';

function take(iterator, n) {
  const out = [];
  for (let i = 0; i < n; i++) out.push(iterator.next().value);
  return out;
}

test('backoff delays double from initialMs and are capped at maxMs', () => {
  const delays = take(backoff({ initialMs: 100, maxMs: 1000, factor: 2, jitter: 0 }), 8);
  assert.deepEqual(delays, [100, 200, 400, 800, 1000, 1000, 1000, 1000]);
});

test('backoff jitter keeps every delay within [nominal * (1 - jitter), nominal]', () => {
  for (const jitter of [0, 0.25, 0.5, 1]) {
    for (const random of [() => 0, () => 0.999999, Math.random]) {
      const delays = take(backoff({ initialMs: 50, maxMs: 2000, factor: 3, jitter }, random), 40);
      delays.forEach((d, i) => {
        const nominal = Math.min(2000, 50 * 3 ** i);
        assert.ok(d >= nominal * (1 - jitter) - 1e-9 && d <= nominal + 1e-9, `delay ${i} = ${d} (nominal ${nominal}, jitter ${jitter})`);
        assert.ok(d <= 2000);
      });
    }
  }
});

test('backoff jitter spreads a herd of clients', () => {
  const first = new Set();
  for (let i = 0; i < 50; i++) first.add(backoff({ initialMs: 1000, jitter: 0.5, maxMs: 10000 }).next().value);
  assert.ok(first.size > 40, 'fifty clients cut at once do not all retry at the same instant');
});

test('backoffDelay is the pure per-attempt form and never overflows', () => {
  const r = () => 0.5;
  assert.equal(backoffDelay(0, { initialMs: 100, jitter: 0 }, r), 100);
  assert.equal(backoffDelay(3, { initialMs: 100, jitter: 0 }, r), 800);
  assert.equal(backoffDelay(5000, { initialMs: 100, maxMs: 5000, jitter: 0 }, r), 5000);
  assert.equal(backoffDelay(1, { initialMs: 100, jitter: 1 }, () => 0), 0);
  const d = DEFAULT_BACKOFF;
  assert.ok(backoffDelay(100) <= d.maxMs);
});

test('backoff refuses nonsense parameters', () => {
  assert.throws(() => backoff({ initialMs: 0 }).next(), RangeError);
  assert.throws(() => backoff({ initialMs: 10, maxMs: 5 }).next(), RangeError);
  assert.throws(() => backoff({ factor: 0.5 }).next(), RangeError);
  assert.throws(() => backoffDelay(0, { jitter: 1.5 }), RangeError);
});

test('close codes: 4500-4999 terminal, 1009 frame too big, everything else reconnects', () => {
  for (const code of [4500, 4501, 4502, 4503, 4999]) assert.equal(closeAction(code), 'terminal');
  assert.equal(closeAction(1009), 'frame_too_big');
  for (const code of [null, undefined, 1000, 1001, 1006, 1011, 4000, 4001, 4499, 5000]) {
    assert.equal(closeAction(code), 'reconnect', String(code));
  }
});

test('RecentIds drops duplicates and forgets the least recently seen beyond capacity', () => {
  const ids = new RecentIds(3);
  assert.equal(ids.add('1'), true);
  assert.equal(ids.add(2), true);
  assert.equal(ids.add('1'), false, 'a duplicate');
  assert.equal(ids.has('2'), true, 'numbers and strings are the same id');
  ids.add('3');
  ids.add('4'); // evicts 2: 1 was refreshed by the duplicate
  assert.equal(ids.size, 3);
  assert.equal(ids.has('2'), false);
  assert.equal(ids.has('1'), true);
  assert.throws(() => new RecentIds(0), RangeError);
});

test('normalizeUrl maps http to ws and appends /ws once', () => {
  assert.equal(normalizeUrl('ws://h:8000'), 'ws://h:8000/ws');
  assert.equal(normalizeUrl('http://h:8000/'), 'ws://h:8000/ws');
  assert.equal(normalizeUrl('https://h/app/'), 'wss://h/app/ws');
  assert.equal(normalizeUrl('ws://h/ws?x=1'), 'ws://h/ws?x=1');
  assert.equal(normalizeUrl('/ws', 'https://example.test/page'), 'wss://example.test/ws');
  assert.equal(normalizeUrl(undefined, 'http://localhost:8000/'), 'ws://localhost:8000/ws');
  assert.throws(() => normalizeUrl('ftp://h'), /not a gateway URL/);
  assert.throws(() => normalizeUrl('nonsense'), /not a gateway URL/);
});

test('sseUrl carries the subscription in the query string', () => {
  const url = new URL(sseUrl('wss://h/app/ws', { table: 'orders', filter: 'status=eq.a&x=in.(1,2)', columns: ['id', 'x'], events: ['insert'] }, { since: '42', token: 't k' }));
  assert.equal(url.origin + url.pathname, 'https://h/app/sse');
  assert.equal(url.searchParams.get('table'), 'orders');
  assert.equal(url.searchParams.get('filter'), 'status=eq.a&x=in.(1,2)');
  assert.equal(url.searchParams.get('columns'), 'id,x');
  assert.equal(url.searchParams.get('events'), 'INSERT');
  assert.equal(url.searchParams.get('since'), '42');
  assert.equal(url.searchParams.get('token'), 't k');
  const snap = new URL(sseUrl('ws://h/ws', { table: 'orders', snapshot: true }));
  assert.equal(snap.searchParams.get('snapshot'), 'true');
  assert.equal(snap.searchParams.get('since'), null);
});

const change = (op, record, old = null, id = '1') => ({ type: 'change', id, op, record, old_record: old });

test('TableMirror: snapshot, then changes by primary key, filter exits, truncate', () => {
  const m = new TableMirror({ filter: 'status=eq.pending' });
  assert.equal(m.applySnapshot({ part: 0, rows: [{ id: 1, status: 'pending' }], done: false }), false, 'not visible until done');
  assert.deepEqual(m.rows(), []);
  assert.equal(m.applySnapshot({ part: 1, rows: [{ id: 2, status: 'pending' }], done: true }), true);
  assert.deepEqual(m.rows().map((r) => r.id), [1, 2]);
  m.applyChange(change('INSERT', { id: 3, status: 'pending' }));
  m.applyChange(change('INSERT', { id: 4, status: 'shipped' })); // cannot happen on the wire, ignored anyway
  m.applyChange(change('UPDATE', { id: 1, status: 'shipped' }, { id: 1, status: 'pending' }));
  assert.deepEqual(m.rows().map((r) => r.id), [2, 3], 'an UPDATE leaving the filter removes the row');
  m.applyChange(change('UPDATE', { id: 20, status: 'pending' }, { id: 2, status: 'pending' }));
  assert.deepEqual(m.rows().map((r) => r.id), [3, 20], 'a primary-key update moves the row');
  m.applyChange(change('DELETE', null, { id: 3, status: 'pending' }));
  assert.deepEqual(m.rows().map((r) => r.id), [20]);
  assert.equal(m.applyChange(change('DELETE', null, { id: 99 })), false);
  m.applyChange(change('TRUNCATE', null));
  assert.equal(m.size, 0);
});

test('TableMirror: a snapshot part 0 starts over (reconnect before done)', () => {
  const m = new TableMirror();
  m.applySnapshot({ part: 0, rows: [{ id: 1 }, { id: 2 }], done: false });
  m.applySnapshot({ part: 0, rows: [{ id: 1 }], done: false });
  m.applySnapshot({ part: 1, rows: [{ id: 3 }], done: true });
  assert.deepEqual(m.rows().map((r) => r.id), [1, 3]);
  m.applySnapshot({ part: 0, rows: [{ id: 9 }], done: true });
  assert.deepEqual(m.rows().map((r) => r.id), [9], 'a new complete snapshot replaces the rows');
});

test('TableMirror: composite keys with a key function', () => {
  const m = new TableMirror({ key: (r) => [r.a, r.b] });
  m.applySnapshot({ part: 0, rows: [{ a: 1, b: 1, v: 'x' }, { a: 1, b: 2, v: 'y' }], done: true });
  m.applyChange(change('UPDATE', { a: 1, b: 2, v: 'z' }, { a: 1, b: 2, v: 'y' }));
  assert.deepEqual(m.rows().map((r) => r.v), ['x', 'z']);
  assert.equal(m.get([1, 2]).v, 'z');
});

test('Position: parses head:xmax:open and holds exactly what a state at it reflects', () => {
  assert.equal(Position.parse('1041'), null, 'a change id is not a position');
  assert.equal(Position.parse('1:2'), null);
  assert.equal(Position.parse(null), null);
  const p = Position.parse('10:500:480,495');
  const change = (id, txid) => ({ id, txid });
  assert.equal(p.holds(change('10', '479')), true);
  assert.equal(p.holds(change('3', '499')), true);
  assert.equal(p.holds(change('11', '479')), false, 'above the head');
  assert.equal(p.holds(change('9', '480')), false, 'its transaction was open');
  assert.equal(p.holds(change('9', '500')), false, 'at or above xmax');
  assert.equal(p.holds({ id: '9' }), false, 'no txid: not held');
  // Beyond 2^53: compared exactly, not as rounded numbers.
  const big = Position.parse('9007199254740993:9223372036854775807:');
  assert.equal(big.holds(change('9007199254740993', '9223372036854775806')), true);
  assert.equal(big.holds(change('9007199254740994', '1')), false);
});
