export type BackoffOptions = import('./types.js').BackoffOptions;
/** @typedef {import('./types.js').BackoffOptions} BackoffOptions */
/** Default reconnect delays (milliseconds): 100 ms doubling up to 10 s, equal jitter. */
export declare const DEFAULT_BACKOFF: Readonly<{
    initialMs: 100;
    maxMs: 10000;
    factor: 2;
    jitter: 0.5;
}>;
/**
 * Throws RangeError for parameters that would not back off.
 * @param {Required<BackoffOptions>} options
 */
export declare function checkBackoff({ initialMs, maxMs, factor, jitter }: Required<BackoffOptions>): void;
/**
 * The delay before retry number `attempt` (0-based), in milliseconds.
 *
 * nominal = min(maxMs, initialMs * factor ** attempt);
 * delay   = nominal * (1 - jitter) + random * nominal * jitter
 * so every delay lies in [nominal * (1 - jitter), nominal] and never exceeds maxMs.
 * jitter 0.5 (default) is "equal jitter", 1 is "full jitter", 0 is plain exponential.
 * @param {number} attempt
 * @param {BackoffOptions} [options]
 * @param {() => number} [random]
 * @returns {number}
 */
export declare function backoffDelay(attempt: number, options?: BackoffOptions, random?: () => number): number;
/**
 * An endless iterator of reconnect delays (ms); make a new one to reset after a success.
 * @param {BackoffOptions} [options]
 * @param {() => number} [random]
 * @returns {Generator<number, never, unknown>}
 */
export declare function backoff(options?: BackoffOptions, random?: () => number): Generator<number, never, unknown>;
/** What the close codes the client acts on mean (for error messages). */
export declare const CLOSE_MEANINGS: Readonly<{
    4500: "protocol violation";
    4501: "unauthorized";
    4502: "forbidden";
    4503: "token expired";
}>;
/**
 * What to do after the connection closed with `code` (null/undefined/1006: no close
 * frame): 'terminal' for 4500-4999 (do not reconnect), 'frame_too_big' for 1009
 * (do not resend the refused subscribe, reconnect for the rest), else 'reconnect'
 * (a server-initiated 1000 too: the caller still wants its subscriptions).
 * @param {number | null | undefined} code
 * @returns {'reconnect' | 'terminal' | 'frame_too_big'}
 */
export declare function closeAction(code: number | null | undefined): 'reconnect' | 'terminal' | 'frame_too_big';
