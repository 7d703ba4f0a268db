import { PgcastError } from './errors.js';
import { Channel, Subscription } from './subscription.js';
import { Topic } from './topic.js';
export type Row = import('./types.js').Row;
export type Status = import('./types.js').Status;
/**
 * A gateway connection that reconnects and resumes by itself. Use `createClient`
 * (or `getClient` to share one per URL). It connects at once.
 */
export declare class Client {
    /** The normalized WebSocket URL. */
    url: string;
    /** @type {Status} */
    status: Status;
    /** @type {string | null} The change-log position announced by the first `welcome`. */
    position: string | null;
    /** @type {PgcastError | null} The error that closed the client (a 4500-4999 close), else null. */
    error: PgcastError | null;
    /** @param {import('./types.js').ClientOptions} [options] */
    constructor(options?: import('./types.js').ClientOptions);
    /** @returns {import('./types.js').TransportName} 'websocket' or 'sse' (after the fallback, or with transport: 'sse'). */
    get transport(): import('./types.js').TransportName;
    /**
     * Listen to 'status' (status), 'resync' (frame, subscription) or 'error' (error). Returns an unsubscribe function.
     * @param {'status' | 'resync' | 'error'} event
     * @param {Function} callback
     * @returns {() => void}
     */
    on(event: 'status' | 'resync' | 'error', callback: Function): () => void;
    /**
     * @param {'status' | 'resync' | 'error'} event
     * @param {Function} callback
     */
    off(event: 'status' | 'resync' | 'error', callback: Function): void;
    /**
     * Subscribe to a table: `{table, schema, filter, events, columns, snapshot, since}`.
     * @template {Row} [R=Row]
     * @param {import('./types.js').TableRequest} request
     * @param {import('./types.js').SubscriptionHandlers<R>} [handlers]
     * @returns {Subscription}
     */
    subscribe<R extends Row = Row>(request: import('./types.js').TableRequest, handlers?: import('./types.js').SubscriptionHandlers<R>): Subscription;
    /**
     * A live mirror: snapshot + changes by key, filter exits removed, re-snapshot on
     * resync (see watchTable in mirror.js). Throws FilterError.
     * @template {Row} [R=Row]
     * @param {import('./types.js').WatchTableRequest<R>} request
     * @param {import('./types.js').WatchTableHandlers<R>} [handlers]
     * @returns {import('./types.js').TableWatch<R>}
     */
    watchTable<R extends Row = Row>(request: import('./types.js').WatchTableRequest<R>, handlers?: import('./types.js').WatchTableHandlers<R>): import('./types.js').TableWatch<R>;
    /**
     * A raw NOTIFY channel.
     * @param {string} name
     * @returns {Channel}
     */
    channel(name: string): Channel;
    /**
     * Join a presence and broadcast topic (the same Topic for the same name until it
     * is closed). Needs a WebSocket: over SSE its 'error' listeners get `not_supported`.
     * @param {string} name
     * @param {import('./types.js').TopicOptions} [options] apply when the topic is first joined
     * @returns {Topic}
     */
    topic(name: string, options?: import('./types.js').TopicOptions): Topic;
    /** Close the connection and end every subscription. Final. */
    close(): void;
}
/**
 * A new client for `options.url` (see the README for every option).
 * @param {import('./types.js').ClientOptions} [options]
 * @returns {Client}
 */
export declare function createClient(options?: import('./types.js').ClientOptions): Client;
/**
 * The shared client for `url`: the same instance for the same (normalized) URL
 * until it is closed. `options` apply only when it is created.
 * @param {string | null} [url]
 * @param {Omit<import('./types.js').ClientOptions, 'url'>} [options]
 * @returns {Client}
 */
export declare function getClient(url?: string | null, options?: Omit<import('./types.js').ClientOptions, 'url'>): Client;
/** Close every shared client (tests, or a single-page app's logout). */
export declare function closeAllClients(): void;
