// The JS filter evaluator against the gateway's semantics: the cases of
// tests/unit/test_filters.py verbatim, then filter-cases.json (verdicts computed by
// src/pgcast/filters.py, regenerated with make_filter_cases.py).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { parseFilter, matchesFilter, FilterError } from '../pgcast.js';

const MATCH_CASES = [
  ['status=eq.pending', { status: 'pending' }, true],
  ['status=eq.pending', { status: 'shipped' }, false],
  ['status=neq.pending', { status: 'shipped' }, true],
  ['amount=gt.100', { amount: 101 }, true],
  ['amount=gt.100', { amount: 100 }, false],
  ['amount=gte.100', { amount: 100 }, true],
  ['amount=lt.100.5', { amount: 100.25 }, true],
  ['amount=lte.7', { amount: 8 }, false],
  ['merchant_id=in.(1,2,3)', { merchant_id: 2 }, true],
  ['merchant_id=in.(1,2,3)', { merchant_id: 4 }, false],
  ['name=in.("a,b",c)', { name: 'a,b' }, true],
  ['deleted_at=is.null', { deleted_at: null }, true],
  ['deleted_at=is.null', { deleted_at: '2026-01-01' }, false],
  ['deleted_at=is.not_null', { deleted_at: '2026-01-01' }, true],
  ['flag=is.true', { flag: true }, true],
  ['flag=eq.false', { flag: false }, true],
  ['status=not.eq.pending', { status: 'shipped' }, true],
  ['status=not.in.(a,b)', { status: 'a' }, false],
  ['code=eq.007', { code: '007' }, true],
  ['code=eq.007', { code: 7 }, false], // not a JSON number: no numeric match
  ['code=eq.007', { code: '7' }, false],
  ['amount=eq.100', { amount: 100.0 }, true],
  ['amount=gt.abc', { amount: 5 }, false],
  ['status=eq.pending&amount=gt.10', { status: 'pending', amount: 11 }, true],
  ['status=eq.pending&amount=gt.10', { status: 'pending', amount: 9 }, false],
  // NULL is neither equal nor unequal to a value (SQL semantics), negated or not
  ['status=eq.x', { status: null }, false],
  ['status=neq.x', { status: null }, false],
  ['status=not.eq.x', { status: null }, false],
  ['status=eq.x', {}, false],
  ['value=eq.', { value: '' }, true],
  // only strict JSON-style numbers compare numerically (tenant ids!)
  ['tenant=eq.7_0', { tenant: 70 }, false],
  ['tenant=eq. 70', { tenant: 70 }, false],
  ['tenant=eq.+70', { tenant: 70 }, false],
  ['tenant=eq.0070', { tenant: 70 }, false],
  ['tenant=eq.70.0', { tenant: 70 }, true],
  ['tenant=eq.7e1', { tenant: 70 }, true],
  ['tenant=eq.-3', { tenant: -3 }, true],
];

for (const [text, row, expected] of MATCH_CASES) {
  test(`filter ${text} on ${JSON.stringify(row)} is ${expected}`, () => {
    assert.equal(parseFilter(text).matches(row), expected);
  });
}

const BAD_FILTERS = [
  'status',
  'status=pending',
  'status=like.pend%',
  '=eq.x',
  'status=eq',
  'a=in.1,2',
  'a=in.()',
  'a=in.("unterminated)',
  'a=is.maybe',
  'a=eq.1&',
  'x'.repeat(5000),
  'a\x00b=eq.1',
  'a"b=eq.1',
  Array(40).fill('a=eq.1').join('&'),
  "status=eq.x'; DROP TABLE orders; --&=",
];

for (const text of BAD_FILTERS) {
  test(`bad filter ${JSON.stringify(text.slice(0, 40))} raises FilterError with code bad_filter`, () => {
    assert.throws(() => parseFilter(text), (err) => err instanceof FilterError && err.code === 'bad_filter' && err.message.length > 0);
  });
}

test('SQL in a value is just a string', () => {
  const f = parseFilter("status=eq.x'; DROP TABLE orders; --");
  assert.equal(f.matches({ status: "x'; DROP TABLE orders; --" }), true);
  assert.equal(f.matches({ status: 'x' }), false);
});

test('the empty filter matches every row but not a missing one', () => {
  assert.equal(parseFilter('').matches({ a: 1 }), true);
  assert.equal(parseFilter(undefined).matches({ a: 1 }), true);
  assert.equal(parseFilter(null).matches(null), false);
  assert.equal(String(parseFilter('a=eq.1&b=in.(1,2)')), 'a=eq.1&b=in.(1,2)');
  assert.equal(matchesFilter('a=eq.1', { a: 1 }), true);
});

test('inherited properties read as absent columns', () => {
  assert.equal(parseFilter('constructor=is.null').matches({}), true);
  assert.equal(parseFilter('toString=eq.x').matches({}), false);
  assert.equal(parseFilter('__proto__=is.null').matches(JSON.parse('{"a":1}')), true);
});

test('parity with the gateway (src/pgcast/filters.py) on generated cases', () => {
  const cases = JSON.parse(readFileSync(new URL('./filter-cases.json', import.meta.url), 'utf8'));
  assert.ok(cases.length > 300);
  let checked = 0;
  for (const { filter, valid, rows } of cases) {
    let parsed;
    try {
      parsed = parseFilter(filter);
    } catch (err) {
      assert.ok(err instanceof FilterError);
      assert.equal(valid, false, `JS refused ${JSON.stringify(filter)}, the gateway accepts it`);
      continue;
    }
    assert.equal(valid, true, `JS accepted ${JSON.stringify(filter.slice(0, 80))}, the gateway refuses it`);
    for (const [row, expected] of rows) {
      assert.equal(parsed.matches(row), expected, `${filter} on ${JSON.stringify(row)}`);
      checked += 1;
    }
  }
  assert.ok(checked > 5000);
});
