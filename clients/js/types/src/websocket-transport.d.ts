export type Subscription = import('./subscription.js').Subscription;
export type Transport = import('./types.js').Transport;
export type Connection = {
    ws: any;
    /**
     * the handshake succeeded
     */
    opened: boolean;
    /**
     * the gateway sent `welcome`
     */
    welcomed: boolean;
    /**
     * the refused upgrade's status, where the runtime tells it
     */
    httpStatus: number | null;
};
/**
 * The `subscribe` message for `request` under `wireId`, resuming after `since`.
 * @param {string} wireId
 * @param {any} request a TableRequest or {channel}
 * @param {string | null} since
 */
export declare function subscribeFrame(wireId: string, request: any, since: string | null): Record<string, unknown>;
/** @implements {Transport} */
export declare class WebSocketTransport implements Transport {
    /** @type {'websocket'} */
    name: 'websocket';
    canPublish: boolean;
    _client: import("./client.js").Client;
    _WebSocket: any;
    /** @type {any} the current socket */
    _ws: any;
    /** @type {Map<string, Subscription>} wire id -> subscription, on the current connection */
    _byWire: Map<string, Subscription>;
    /** @type {string | null} the current connection's `welcome` position */
    _connectionPosition: string | null;
    /** @type {Iterator<number> | null} */
    _delays: Iterator<number> | null;
    _reconnectTimer: number | undefined;
    _openTimer: number | undefined;
    _pingTimer: number | undefined;
    _pongTimer: number | undefined;
    _activity: boolean;
    _handshakeFailures: number;
    _connectSeq: number;
    _active: boolean;
    /** @param {import('./client.js').Client} client */
    constructor(client: import('./client.js').Client);
    start(): void;
    stop(code?: number, reason?: string): void;
    /** @param {Subscription} sub */
    subscribe(sub: Subscription): void;
    /** @param {Subscription} sub */
    unsubscribe(sub: Subscription): void;
    /** @param {object} frame */
    send(frame: object): boolean;
    /** @param {Subscription} sub */
    _sendSubscribe(sub: Subscription): void;
    _connect(): Promise<void>;
    /**
     * @param {Connection} conn
     * @param {unknown} data
     */
    _onFrame(conn: Connection, data: unknown): void;
    /** @param {import('./types.js').WelcomeFrame} frame */
    _onWelcome(frame: import('./types.js').WelcomeFrame): void;
    _startHeartbeat(): void;
    _stopTimers(): void;
    _drop(code?: number, reason?: string): void;
    /**
     * The connection `conn` ended with close `code` (null: no close frame).
     * @param {Connection} conn
     * @param {number | null} code
     * @param {string} reason
     */
    _ended(conn: Connection, code: number | null, reason: string): void;
    _scheduleReconnect(): void;
}
