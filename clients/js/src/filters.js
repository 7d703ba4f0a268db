// The filter evaluator: PostgREST syntax with the gateway's semantics, the same
// verdicts as src/pgcast/filters.py (test/filter-cases.json holds the gateway's own).

import { FilterError } from './errors.js';

/** @typedef {import('./types.js').Row} Row */
/** @typedef {import('./types.js').FilterCondition} FilterCondition */

/** The filter operators the gateway knows. */
export const FILTER_OPERATORS = Object.freeze(/** @type {const} */ (['eq', 'neq', 'lt', 'lte', 'gt', 'gte', 'in', 'is']));
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
 * @param {string | null | undefined} text
 * @returns {Filter}
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

/**
 * True when `row` matches `filter` (a string or a parsed filter). A null row never matches.
 * @param {string | Filter | null | undefined} filter
 * @param {Row | null | undefined} row
 * @returns {boolean}
 */
export function matchesFilter(filter, row) {
  const parsed = typeof filter === 'object' && filter !== null ? filter : parseFilter(/** @type {string} */ (filter));
  return parsed.matches(row);
}

/** A parsed filter: its conditions (all must hold), the columns it reads, `matches(row)`. */
export class Filter {
  /** @param {FilterCondition[]} conditions */
  constructor(conditions) {
    /** @type {readonly FilterCondition[]} */
    this.conditions = Object.freeze(conditions);
    /** @type {readonly string[]} The columns the filter reads. */
    this.columns = Object.freeze([...new Set(conditions.map((c) => c.column))]);
  }
  /**
   * Same semantics as the gateway; a null/undefined row never matches.
   * @param {Row | null | undefined} row
   * @returns {boolean}
   */
  matches(row) {
    if (row === null || row === undefined) return false;
    return this.conditions.every((c) => conditionMatches(c, row));
  }
  /** @returns {string} */
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
