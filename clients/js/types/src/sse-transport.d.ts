export type Subscription = import('./subscription.js').Subscription;
export type Transport = import('./types.js').Transport;
/** @implements {Transport} */
export declare class SseTransport implements Transport {
    /** @type {'sse'} */
    name: 'sse';
    canPublish: boolean;
    _client: import("./client.js").Client;
    _EventSource: any;
    _active: boolean;
    /** @type {Set<ReturnType<typeof setTimeout>>} streams waiting to be opened again */
    _retries: Set<ReturnType<typeof setTimeout>>;
    /** @param {import('./client.js').Client} client */
    constructor(client: import('./client.js').Client);
    start(): void;
    stop(): void;
    /** @param {Subscription} sub */
    subscribe(sub: Subscription): void;
    /** @param {Subscription} sub */
    unsubscribe(sub: Subscription): void;
    send(): boolean;
    /**
     * Open `sub`'s stream, resuming from its last change id (else its resume position).
     * @param {Subscription} sub
     * @param {number} [attempt] how many opens in a row failed before this one
     */
    _open(sub: Subscription, attempt?: number): Promise<void>;
    /**
     * A stream closed after an HTTP error: a 4xx the runtime lets us see (the
     * eventsource package does, browsers do not) is a refusal; otherwise open it
     * again after a backoff, from the last change id.
     * @param {Subscription} sub
     * @param {any} event
     * @param {number} attempt
     * @param {boolean} opened
     */
    _closedForGood(sub: Subscription, event: any, attempt: number, opened: boolean): void;
    /**
     * One stream per subscription: every frame on it is this subscription's.
     * @param {Subscription} sub
     * @param {any} frame
     * @param {string} lastEventId
     */
    _onFrame(sub: Subscription, frame: any, lastEventId: string): void;
    _updateStatus(): void;
}
