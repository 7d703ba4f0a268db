// The reconnect policy, pure: backoff delays (exponential with jitter, reset after
// a success by making a new iterator) and what a close code means for reconnecting.

/** @typedef {import('./types.js').BackoffOptions} BackoffOptions */

/** Default reconnect delays (milliseconds): 100 ms doubling up to 10 s, equal jitter. */
export const DEFAULT_BACKOFF = Object.freeze({ initialMs: 100, maxMs: 10000, factor: 2, jitter: 0.5 });

/**
 * Throws RangeError for parameters that would not back off.
 * @param {Required<BackoffOptions>} options
 */
export function checkBackoff({ initialMs, maxMs, factor, jitter }) {
  if (!(initialMs > 0)) throw new RangeError(`backoff initialMs must be > 0, got ${initialMs}`);
  if (!(maxMs >= initialMs)) throw new RangeError(`backoff maxMs (${maxMs}) must be >= initialMs (${initialMs})`);
  if (!(factor >= 1)) throw new RangeError(`backoff factor must be >= 1, got ${factor}`);
  if (!(jitter >= 0 && jitter <= 1)) throw new RangeError(`backoff jitter must be between 0 and 1, got ${jitter}`);
}

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
export function backoffDelay(attempt, options = {}, random = Math.random) {
  const o = { ...DEFAULT_BACKOFF, ...options };
  checkBackoff(o);
  const nominal = Math.min(o.maxMs, o.initialMs * Math.pow(o.factor, Math.max(0, attempt)));
  return nominal * (1 - o.jitter) + random() * nominal * o.jitter;
}

/**
 * An endless iterator of reconnect delays (ms); make a new one to reset after a success.
 * @param {BackoffOptions} [options]
 * @param {() => number} [random]
 * @returns {Generator<number, never, unknown>}
 */
export function* backoff(options = {}, random = Math.random) {
  const o = { ...DEFAULT_BACKOFF, ...options };
  checkBackoff(o);
  let nominal = o.initialMs;
  for (;;) {
    yield nominal * (1 - o.jitter) + random() * nominal * o.jitter;
    nominal = Math.min(o.maxMs, nominal * o.factor); // stop growing once capped
  }
}

/** What the close codes the client acts on mean (for error messages). */
export const CLOSE_MEANINGS = Object.freeze({ 4500: 'protocol violation', 4501: 'unauthorized', 4502: 'forbidden', 4503: 'token expired' });

/**
 * What to do after the connection closed with `code` (null/undefined/1006: no close
 * frame): 'terminal' for 4500-4999 (do not reconnect), 'frame_too_big' for 1009
 * (do not resend the refused subscribe, reconnect for the rest), else 'reconnect'
 * (a server-initiated 1000 too: the caller still wants its subscriptions).
 * @param {number | null | undefined} code
 * @returns {'reconnect' | 'terminal' | 'frame_too_big'}
 */
export function closeAction(code) {
  if (typeof code === 'number' && code >= 4500 && code <= 4999) return 'terminal';
  if (code === 1009) return 'frame_too_big';
  return 'reconnect';
}
