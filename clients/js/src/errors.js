// The client's one error tree (PgcastError, FilterError) and the rule that a
// caller's callback never breaks the connection (safeCall).

/**
 * Base class of every error the client reports; `code` is machine-readable: the
 * gateway's error code (`bad_filter`, `unknown_table`, `not_supported`, ...) or one
 * of the client's: `rejected` (a 4500-4999 close or HTTP 401/403; see `closeCode`),
 * `frame_too_big` (close 1009), `queue_full`, `closed`, `sse_fallback`
 * (informational), `token`, `connect`, `no_websocket`, `no_eventsource`, `bad_url`,
 * `bad_option`, `bad_request`, `bad_event`.
 */
export class PgcastError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {{hint?: string, closeCode?: number, id?: string, frame?: import('./types.js').ErrorFrame}} [options]
   */
  constructor(code, message, { hint, closeCode, id, frame } = {}) {
    super(hint ? `${message} (hint: ${hint})` : message);
    this.name = 'PgcastError';
    this.code = code;
    // Declared for the types; only what is known becomes an own property.
    /** @type {string | undefined} How to fix it. */
    this.hint;
    /** @type {number | undefined} The WebSocket close code that caused it, if any. */
    this.closeCode;
    /** @type {string | undefined} The id of the refused message (subscription wire id or publish id). */
    this.id;
    /** @type {import('./types.js').ErrorFrame | undefined} The gateway's `error` frame, if it came from one. */
    this.frame;
    if (hint !== undefined) this.hint = hint;
    if (closeCode !== undefined) this.closeCode = closeCode;
    if (id !== undefined) this.id = id;
    if (frame !== undefined) this.frame = frame;
  }
}

/** A filter string the gateway would refuse with `bad_filter`. */
export class FilterError extends PgcastError {
  /**
   * @param {string} message
   * @param {string} [hint]
   */
  constructor(message, hint) {
    super('bad_filter', message, { hint });
    this.name = 'FilterError';
  }
}

/** The message of whatever a callback or a runtime threw. */
export function describe(err) {
  return err && err.message ? err.message : String(err);
}

/**
 * Call `fn(...args)` if it is a function. A throwing handler must not break the
 * connection: its error is rethrown on a fresh task, where the runtime reports it
 * as it reports any uncaught error.
 * @param {unknown} fn
 * @param {...unknown} args
 */
export function safeCall(fn, ...args) {
  if (typeof fn !== 'function') return;
  try {
    fn(...args);
  } catch (err) {
    setTimeout(() => {
      throw err;
    });
  }
}
