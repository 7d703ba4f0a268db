import { PgcastError } from './errors.js';
export type Queued = {
    frame: {
        type: string;
        id?: string;
    };
    onError: Function;
};
/** @typedef {{frame: {type: string, id?: string}, onError: Function}} Queued */
export declare class Outbox {
    limit: number;
    _report: (error: PgcastError) => void;
    /** @type {Queued[]} */
    _queue: Queued[];
    /** @type {Map<string | undefined, Function>} publish id -> onError */
    _awaiting: Map<string | undefined, Function>;
    /**
     * @param {number} limit messages kept while offline, and publishes awaiting an answer
     * @param {(error: PgcastError) => void} report where a dropped message is reported too
     */
    constructor(limit: number, report: (error: PgcastError) => void);
    /**
     * Keep `onError` until the gateway answers message `id` (an answer is an error).
     * @param {string | undefined} id
     * @param {Function} onError
     */
    await(id: string | undefined, onError: Function): void;
    /**
     * The gateway answered message `id`: its error callback, once (undefined if none).
     * @param {string | undefined} id
     */
    answered(id: string | undefined): Function | undefined;
    /**
     * Queue a message until the next connection; when full the oldest is dropped,
     * reported to its caller and to `report`.
     * @param {Queued['frame']} frame
     * @param {Function} onError
     */
    push(frame: Queued['frame'], onError: Function): void;
    /** Take every queued message, oldest first. @returns {Queued[]} */
    drain(): Queued[];
    /**
     * Fail every queued message with `error` (each its own, if given a function) and
     * forget them, and the ones awaiting an answer.
     * @param {PgcastError | ((frame: Queued['frame']) => PgcastError)} error
     * @param {boolean} [awaitingToo] fail the messages awaiting an answer as well
     */
    fail(error: PgcastError | ((frame: Queued['frame']) => PgcastError), awaitingToo?: boolean): void;
}
