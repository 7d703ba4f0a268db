import { PgcastError } from './errors.js';
export type Frame = import('./types.js').Frame;
/** @typedef {import('./types.js').Frame} Frame */
/**
 * The change ids a subscription delivered most recently (a bounded LRU).
 *
 * A resumed subscription replays a window before its resume point, so it may get
 * ids it already delivered. Never drop by "id <= last id": ids are not commit
 * order. The LRU fails safe: an id older than the last `capacity` is delivered
 * twice, a new id is never dropped.
 */
export declare class RecentIds {
    /** @readonly */
    capacity: number;
    /** @param {number} [capacity] */
    constructor(capacity?: number);
    /**
     * Remember `id`; false if it was already remembered (a duplicate).
     * @param {string | number} id
     * @returns {boolean}
     */
    add(id: string | number): boolean;
    /**
     * @param {string | number} id
     * @returns {boolean}
     */
    has(id: string | number): boolean;
    /** @returns {number} */
    get size(): number;
}
/**
 * What a table subscription asks for: `request` checked (PgcastError 'bad_request')
 * and reduced to the fields the gateway reads, `since` left out (it changes on
 * every resubscribe).
 * @param {import('./types.js').TableRequest} request
 * @returns {import('./types.js').TableRequest}
 */
export declare function tableRequest(request: import('./types.js').TableRequest): import('./types.js').TableRequest;
/**
 * One table or channel subscription. Returned by `client.subscribe()`; the caller
 * keeps it only to `unsubscribe()`. State: 'pending' (sent or waiting to be sent),
 * 'live' (accepted), 'closed' (unsubscribed or client closed), 'failed' (refused).
 */
export declare class Subscription {
    /** Client-side id; wire ids are `id`, then `id-2`, `id-3`... per resubscribe. */
    id: string;
    /** @type {import('./types.js').SubscriptionState} */
    state: import('./types.js').SubscriptionState;
    /** @type {string | null} The id of the last change delivered to onChange. */
    lastId: string | null;
    /** @type {string | null} Where to resume when no change was delivered yet (since, snapshot or welcome position). */
    resumeFrom: string | null;
    /**
     * Replayed changes dropped: their id was already delivered, or they predate
     * the snapshot (or `since` position) the subscription started from.
     */
    duplicates: number;
    /** @type {PgcastError | null} */
    error: PgcastError | null;
    /**
     * @param {import('./client.js').Client} client
     * @param {string} key
     * @param {import('./types.js').StreamRequest} request
     * @param {import('./types.js').SubscriptionHandlers<any>} handlers
     * @param {{since?: string | number | null, dedupeWindow?: number}} options
     */
    constructor(client: import('./client.js').Client, key: string, request: import('./types.js').StreamRequest, handlers: import('./types.js').SubscriptionHandlers<any>, { since, dedupeWindow }: {
        since?: string | number | null;
        dedupeWindow?: number;
    });
    unsubscribe(): void;
}
/**
 * A raw NOTIFY channel: `.on('message', cb)` subscribes (on the first listener),
 * `.publish(payload)` sends a `publish` message (queued while offline).
 */
export declare class Channel {
    name: string;
    /**
     * @param {import('./client.js').Client} client
     * @param {string} name
     */
    constructor(client: import('./client.js').Client, name: string);
    /**
     * Listen to 'message' (frame), 'error' (error) or 'subscribed' (frame). Returns an unsubscribe function.
     * @param {'message' | 'error' | 'subscribed'} event
     * @param {Function} callback
     * @returns {() => void}
     */
    on(event: 'message' | 'error' | 'subscribed', callback: Function): () => void;
    /**
     * @param {'message' | 'error' | 'subscribed'} event
     * @param {Function} callback
     */
    off(event: 'message' | 'error' | 'subscribed', callback: Function): void;
    /** Send `{"type":"publish","channel":name,"payload":...}`; the gateway's answer (an error) reaches 'error' listeners. */
    /**
     * @param {unknown} payload a string goes as is, anything else JSON-encoded
     * @returns {string | null} the message id
     */
    publish(payload: unknown): string | null;
    /** Remove every listener and unsubscribe. */
    close(): void;
}
