export type Row = import('./types.js').Row;
export type FilterCondition = import('./types.js').FilterCondition;
/** @typedef {import('./types.js').Row} Row */
/** @typedef {import('./types.js').FilterCondition} FilterCondition */
/** The filter operators the gateway knows. */
export declare const FILTER_OPERATORS: readonly ["eq", "neq", "lt", "lte", "gt", "gte", "in", "is"];
/**
 * Parse a filter string; throws FilterError (code 'bad_filter') where the gateway
 * would refuse it. Returns `{conditions, columns, matches(row), toString()}`.
 * @param {string | null | undefined} text
 * @returns {Filter}
 */
export declare function parseFilter(text: string | null | undefined): Filter;
/**
 * True when `row` matches `filter` (a string or a parsed filter). A null row never matches.
 * @param {string | Filter | null | undefined} filter
 * @param {Row | null | undefined} row
 * @returns {boolean}
 */
export declare function matchesFilter(filter: string | Filter | null | undefined, row: Row | null | undefined): boolean;
/** A parsed filter: its conditions (all must hold), the columns it reads, `matches(row)`. */
export declare class Filter {
    /** @type {readonly FilterCondition[]} */
    conditions: readonly FilterCondition[];
    /** @type {readonly string[]} The columns the filter reads. */
    columns: readonly string[];
    /** @param {FilterCondition[]} conditions */
    constructor(conditions: FilterCondition[]);
    /**
     * Same semantics as the gateway; a null/undefined row never matches.
     * @param {Row | null | undefined} row
     * @returns {boolean}
     */
    matches(row: Row | null | undefined): boolean;
    /** @returns {string} */
    toString(): string;
}
