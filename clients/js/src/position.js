// An exact log position (`head:xmax:open,txids`) as a snapshot hands it out, and
// which changes a state taken there already holds (docs/protocol.md, "Snapshot
// then stream"). Pure; ids and txids are decimal strings up to 2^63-1, so BigInt.

const POSITION = /^([0-9]{1,19}):([0-9]{1,19}):((?:[0-9]{1,19})(?:,[0-9]{1,19}){0,999})?$/;

/**
 * @internal A subscription's starting position. A resume by change id replays a
 * window before that id which can reach back before the snapshot the subscription
 * started from (a row's `tx_xmin` is held low by any long transaction, in any
 * database of the cluster). Those changes' ids were never delivered (the
 * snapshot's rows stood for them), so the id filter lets them through and a row
 * would go back to an older version; `holds` recognises them.
 */
export class Position {
  /**
   * @param {bigint} head
   * @param {bigint} xmax
   * @param {Set<bigint>} open
   */
  constructor(head, xmax, open) {
    this.head = head;
    this.xmax = xmax;
    this.open = open;
  }

  /**
   * The position `text` encodes, or null for a change id (or garbage).
   * @param {unknown} text
   * @returns {Position | null}
   */
  static parse(text) {
    if (text == null) return null;
    const match = POSITION.exec(String(text));
    if (match === null) return null;
    const open = new Set(match[3] ? match[3].split(',').map((x) => BigInt(x)) : []);
    return new Position(BigInt(match[1]), BigInt(match[2]), open);
  }

  /**
   * Whether the state at this position already reflects `change` (the gateway's
   * rule: a change is after the position iff its id is above `head` or its
   * transaction was open then). A change without a readable id or txid: not held.
   * @param {{id?: unknown, txid?: unknown}} change
   * @returns {boolean}
   */
  holds(change) {
    const id = toBigInt(change.id);
    const txid = toBigInt(change.txid);
    if (id === null || txid === null) return false;
    return id <= this.head && txid < this.xmax && !this.open.has(txid);
  }
}

/**
 * @param {unknown} value
 * @returns {bigint | null}
 */
function toBigInt(value) {
  if (typeof value === 'number') return Number.isSafeInteger(value) ? BigInt(value) : null;
  return typeof value === 'string' && /^[0-9]{1,19}$/.test(value) ? BigInt(value) : null;
}
