// A client's outgoing messages: those queued while offline, bounded (the oldest is
// dropped and reported as `queue_full`), and the publishes still waiting for the
// gateway's answer (bounded the same way), so that an answer reaches its caller.

import { PgcastError, safeCall } from './errors.js';

/** @typedef {{frame: {type: string, id?: string}, onError: Function}} Queued */

export class Outbox {
  /**
   * @param {number} limit messages kept while offline, and publishes awaiting an answer
   * @param {(error: PgcastError) => void} report where a dropped message is reported too
   */
  constructor(limit, report) {
    this.limit = limit;
    this._report = report;
    /** @type {Queued[]} */
    this._queue = [];
    /** @type {Map<string | undefined, Function>} publish id -> onError */
    this._awaiting = new Map();
  }

  /**
   * Keep `onError` until the gateway answers message `id` (an answer is an error).
   * @param {string | undefined} id
   * @param {Function} onError
   */
  await(id, onError) {
    this._awaiting.set(id, onError);
    if (this._awaiting.size > this.limit) this._awaiting.delete(this._awaiting.keys().next().value);
  }

  /**
   * The gateway answered message `id`: its error callback, once (undefined if none).
   * @param {string | undefined} id
   */
  answered(id) {
    const onError = this._awaiting.get(id);
    this._awaiting.delete(id);
    return onError;
  }

  /**
   * Queue a message until the next connection; when full the oldest is dropped,
   * reported to its caller and to `report`.
   * @param {Queued['frame']} frame
   * @param {Function} onError
   */
  push(frame, onError) {
    this._queue.push({ frame, onError });
    if (this._queue.length <= this.limit) return;
    const dropped = /** @type {Queued} */ (this._queue.shift());
    const error = new PgcastError('queue_full', `outgoing queue full (${this.limit} messages while offline): dropped a ${dropped.frame.type}`, {
      id: dropped.frame.id,
      hint: 'raise the queueSize option or send less while offline',
    });
    this._awaiting.delete(dropped.frame.id);
    safeCall(dropped.onError, error);
    this._report(error);
  }

  /** Take every queued message, oldest first. @returns {Queued[]} */
  drain() {
    const queued = this._queue;
    this._queue = [];
    return queued;
  }

  /**
   * Fail every queued message with `error` (each its own, if given a function) and
   * forget them, and the ones awaiting an answer.
   * @param {PgcastError | ((frame: Queued['frame']) => PgcastError)} error
   * @param {boolean} [awaitingToo] fail the messages awaiting an answer as well
   */
  fail(error, awaitingToo = false) {
    for (const { frame, onError } of this.drain()) {
      this._awaiting.delete(frame.id);
      safeCall(onError, typeof error === 'function' ? error(frame) : error);
    }
    if (!awaitingToo) return;
    for (const onError of this._awaiting.values()) safeCall(onError, error);
    this._awaiting.clear();
  }
}
