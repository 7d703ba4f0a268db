/**
 * Base class of every error the client reports; `code` is machine-readable: the
 * gateway's error code (`bad_filter`, `unknown_table`, `not_supported`, ...) or one
 * of the client's: `rejected` (a 4500-4999 close or HTTP 401/403; see `closeCode`),
 * `frame_too_big` (close 1009), `queue_full`, `closed`, `sse_fallback`
 * (informational), `token`, `connect`, `no_websocket`, `no_eventsource`, `bad_url`,
 * `bad_option`, `bad_request`, `bad_event`.
 */
export declare class PgcastError extends Error {
    code: string;
    hint: string | undefined;
    closeCode: number | undefined;
    id: string | undefined;
    frame: import("./types.js").ErrorFrame | undefined;
    /**
     * @param {string} code
     * @param {string} message
     * @param {{hint?: string, closeCode?: number, id?: string, frame?: import('./types.js').ErrorFrame}} [options]
     */
    constructor(code: string, message: string, { hint, closeCode, id, frame }?: {
        hint?: string;
        closeCode?: number;
        id?: string;
        frame?: import('./types.js').ErrorFrame;
    });
}
/** A filter string the gateway would refuse with `bad_filter`. */
export declare class FilterError extends PgcastError {
    /**
     * @param {string} message
     * @param {string} [hint]
     */
    constructor(message: string, hint?: string);
}
/** The message of whatever a callback or a runtime threw. */
export declare function describe(err: any): any;
/**
 * Call `fn(...args)` if it is a function. A throwing handler must not break the
 * connection: its error is rethrown on a fresh task, where the runtime reports it
 * as it reports any uncaught error.
 * @param {unknown} fn
 * @param {...unknown} args
 */
export declare function safeCall(fn: unknown, ...args: unknown[]): void;
