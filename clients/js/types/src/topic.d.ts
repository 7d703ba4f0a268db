export type PresenceState = import('./types.js').PresenceState;
export type PresenceMeta = import('./types.js').PresenceMeta;
/**
 * Apply a `presence_diff` to `state` (Phoenix's shape: key -> {metas}); a new object.
 * @param {PresenceState} state
 * @param {PresenceState} joins
 * @param {PresenceState} leaves
 * @returns {PresenceState}
 */
export declare function applyPresenceDiff(state: PresenceState, joins: PresenceState, leaves: PresenceState): PresenceState;
/**
 * One joined topic. Make it with `client.topic(name, options)`.
 */
export declare class Topic {
    name: string;
    /** @type {Required<import('./types.js').TopicOptions>} */
    options: Required<import('./types.js').TopicOptions>;
    /** @type {PresenceState} The presence of the topic on every gateway node. */
    presence: PresenceState;
    /** @type {'joining' | 'joined' | 'closed'} */
    state: 'joining' | 'joined' | 'closed';
    /** @type {{track: boolean, broadcast: boolean}} What the token may do here (from `joined`). */
    rights: {
        track: boolean;
        broadcast: boolean;
    };
    /**
     * @param {import('./client.js').Client} client
     * @param {string} name
     * @param {import('./types.js').TopicOptions} [options]
     */
    constructor(client: import('./client.js').Client, name: string, options?: import('./types.js').TopicOptions);
    /**
     * Listen to 'sync' (presence), 'join' (key, metas), 'leave' (key, metas),
     * 'broadcast' (event, payload), 'joined' (frame) or 'error' (error). Returns an
     * unsubscribe function.
     * @param {'sync' | 'join' | 'leave' | 'broadcast' | 'joined' | 'error'} event
     * @param {Function} callback
     * @returns {() => void}
     */
    on(event: 'sync' | 'join' | 'leave' | 'broadcast' | 'joined' | 'error', callback: Function): () => void;
    /**
     * Track `state` (a JSON object) under `key` (default: the token's subject, else an
     * id of this connection); replaces what this client tracked here. Kept and
     * re-sent after a reconnect.
     * @param {Record<string, unknown>} state
     * @param {{key?: string}} [options]
     */
    track(state: Record<string, unknown>, options?: {
        key?: string;
    }): void;
    /** Stop tracking on this topic. */
    untrack(): void;
    /**
     * Send `event` with `payload` to every member of the topic. Resolves when sent
     * (with `ack: true`: when the gateway acknowledged it); rejects with a
     * PgcastError when offline or refused.
     * @param {string} event
     * @param {unknown} payload
     * @returns {Promise<void>}
     */
    broadcast(event: string, payload: unknown): Promise<void>;
    /** Leave the topic (this client's presence on it leaves too). Final. */
    close(): void;
}
