// The shapes of the wire frames, requests, handlers and options, for TypeScript
// (`tsc` reads them; the declarations in types/ are generated from them and from
// the JSDoc of the other modules). No runtime code.

/** @typedef {Record<string, unknown>} Row */

/** @typedef {'INSERT' | 'UPDATE' | 'DELETE' | 'TRUNCATE'} Operation */

/**
 * `connecting | live | offline`, and `closed` once `close()` ran or the gateway
 * refused the client (4500-4999).
 * @typedef {'connecting' | 'live' | 'offline' | 'closed'} Status
 */

/** @typedef {'auto' | 'websocket' | 'sse'} TransportOption */

/** @typedef {'websocket' | 'sse'} TransportName */

// -- frames (docs/protocol.md) --------------------------------------------------------

/**
 * @typedef {object} WelcomeFrame
 * @property {'welcome'} type
 * @property {number} version
 * @property {string} server
 * @property {string | null} position
 */

/**
 * @template {Row} [R=Row]
 * @typedef {object} ChangeFrame
 * @property {'change'} type
 * @property {string} sub
 * @property {string} id The change id: the resume position, a decimal string.
 * @property {string} schema
 * @property {string} table
 * @property {Operation} op
 * @property {R | null} record New row (INSERT, UPDATE); null for DELETE and TRUNCATE.
 * @property {R | null} old_record Old row (UPDATE, DELETE); null for INSERT and TRUNCATE.
 * @property {string[] | null} changed
 * @property {string} txid
 * @property {string} committed_at
 */

/**
 * @template {Row} [R=Row]
 * @typedef {object} SnapshotFrame
 * @property {'snapshot'} type
 * @property {string} sub
 * @property {number} part 0, 1, 2...; part 0 means a new snapshot: reset your copy.
 * @property {R[]} rows
 * @property {boolean} done
 * @property {string | null} position
 */

/**
 * @typedef {object} SubscribedFrame
 * @property {'subscribed'} type
 * @property {string} id
 * @property {string} [schema]
 * @property {string} [table]
 * @property {string} [channel]
 * @property {number} [replayed]
 * @property {number} [snapshot_rows]
 * @property {string | null} [position]
 */

/**
 * @typedef {object} ResyncFrame
 * @property {'resync'} type
 * @property {string} sub
 * @property {string} reason
 */

/**
 * @typedef {object} MessageFrame
 * @property {'message'} type
 * @property {string} sub
 * @property {string} channel
 * @property {string} payload The NOTIFY payload exactly as sent (never parsed); "" when none.
 */

/**
 * @typedef {object} ErrorFrame
 * @property {'error'} type
 * @property {string | null} id
 * @property {string} code
 * @property {string} message
 */

/** @typedef {WelcomeFrame | ChangeFrame | SnapshotFrame | SubscribedFrame | ResyncFrame | MessageFrame | ErrorFrame} Frame */

// -- options and requests -------------------------------------------------------------

/**
 * @typedef {object} BackoffOptions
 * @property {number} [initialMs] First delay in ms (default 100).
 * @property {number} [maxMs] Cap in ms (default 10000).
 * @property {number} [factor] Growth per attempt (default 2).
 * @property {number} [jitter] Randomized share of each delay, 0..1 (default 0.5: equal jitter).
 */

/**
 * @typedef {object} VisibilityDocument
 * @property {boolean} hidden
 * @property {(type: string, cb: () => void) => void} addEventListener
 * @property {(type: string, cb: () => void) => void} removeEventListener
 */

/**
 * @typedef {object} ClientOptions
 * @property {string | null} [url] Gateway URL: ws(s)://host:port, http(s)://..., a path ("/ws"), or omitted (same origin) in a browser.
 * @property {string} [token] Sent as `?token=` on every connect.
 * @property {() => string | null | undefined | Promise<string | null | undefined>} [getToken] Awaited before every connect (and every SSE stream); its result is used as the token.
 * @property {unknown} [WebSocket] WebSocket constructor (default: globalThis.WebSocket; under Node 20 pass the `ws` package's).
 * @property {unknown} [EventSource] EventSource constructor for the SSE transport (default: globalThis.EventSource).
 * @property {number} [heartbeatMs] Send a ping after this many ms of connection (default 20000; 0 disables).
 * @property {number} [heartbeatTimeoutMs] Drop the connection if no frame at all arrives this long after a ping (default 10000).
 * @property {number} [openTimeoutMs] Give up on a connection that sent no `welcome` within this time (default 10000).
 * @property {BackoffOptions} [backoff]
 * @property {boolean} [pauseWhenHidden] Disconnect while `document.hidden`, reconnect and resume when visible (default false).
 * @property {VisibilityDocument | null} [document] Document to watch for visibility (default: globalThis.document).
 * @property {TransportOption} [transport] 'auto' (default): WebSocket, SSE after `sseAfterFailures` failed handshakes in a row.
 * @property {number} [sseAfterFailures] Consecutive WebSocket handshake failures before the SSE fallback (default 3).
 * @property {number} [queueSize] Outgoing messages kept while offline (default 1000; the oldest is dropped, reported as `queue_full`).
 * @property {number} [dedupeWindow] Change ids remembered per subscription to drop replayed duplicates (default 10000).
 * @property {() => number} [random] Random source for the backoff jitter (tests).
 */

/**
 * @typedef {object} TableRequest
 * @property {string} table
 * @property {string} [schema]
 * @property {string} [filter] PostgREST syntax: `status=eq.pending&amount=gt.100`.
 * @property {Operation[] | Lowercase<Operation>[]} [events]
 * @property {string[]} [columns]
 * @property {boolean} [snapshot] Start with the table's rows (`snapshot` frames), then changes.
 * @property {string | number} [since] Resume after this change id (excludes `snapshot`).
 */

/** @typedef {TableRequest | {channel: string}} StreamRequest What a subscription asks the gateway for. */

/**
 * @template {Row} [R=Row]
 * @typedef {object} SubscriptionHandlers
 * @property {(change: ChangeFrame<R>) => void} [onChange] Each change once (replayed duplicates are dropped), in delivery order.
 * @property {(frame: SnapshotFrame<R>) => void} [onSnapshot] Snapshot chunks; `part === 0` starts a new snapshot (reset your copy).
 * @property {(frame: ResyncFrame) => void} [onResync] The log no longer covers the resume position: rebuild your state from the source.
 * @property {(frame: SubscribedFrame) => void} [onSubscribed] The subscription is live (after every (re)subscribe).
 * @property {(frame: MessageFrame) => void} [onMessage] A channel's NOTIFY.
 * @property {(error: import('./errors.js').PgcastError) => void} [onError] Refused by the gateway, or the client was rejected/closed. Final for this subscription.
 */

/** @typedef {'pending' | 'live' | 'closed' | 'failed'} SubscriptionState */

/**
 * @template {Row} [R=Row]
 * @typedef {string | ((row: R) => unknown)} KeyOption
 */

/**
 * @template {Row} [R=Row]
 * @typedef {Omit<TableRequest, 'snapshot' | 'since'> & {key?: KeyOption<R>}} WatchTableRequest
 */

/**
 * @template {Row} [R=Row]
 * @typedef {object} WatchTableHandlers
 * @property {(rows: R[], mirror: import('./mirror.js').TableMirror<R>) => void} [onRows]
 * @property {(change: ChangeFrame<R>) => void} [onChange]
 * @property {(frame: SubscribedFrame) => void} [onSubscribed]
 * @property {(error: import('./errors.js').PgcastError) => void} [onError]
 */

/**
 * @template {Row} [R=Row]
 * @typedef {object} TableWatch
 * @property {import('./mirror.js').TableMirror<R>} mirror
 * @property {import('./subscription.js').Subscription} subscription
 * @property {() => void} unsubscribe
 */

/**
 * @typedef {object} FilterCondition
 * @property {string} column
 * @property {'eq' | 'neq' | 'lt' | 'lte' | 'gt' | 'gte' | 'in' | 'is'} op
 * @property {readonly string[]} values
 * @property {boolean} negate
 */

// -- presence and broadcast ---------------------------------------------------------

/**
 * One tracked state as the gateway sends it: the state's fields and `phx_ref`.
 * @typedef {{phx_ref: string} & Record<string, unknown>} PresenceMeta
 */

/**
 * A topic's presence: key -> its metas (several when one key is tracked by several
 * connections, e.g. one user in two tabs).
 * @typedef {Record<string, {metas: PresenceMeta[]}>} PresenceState
 */

/**
 * @typedef {object} TopicOptions
 * @property {boolean} [presence] Receive the topic's presence (default true).
 * @property {boolean} [self] Receive this client's own broadcasts (default false).
 * @property {boolean} [ack] `broadcast()` resolves when the gateway acknowledged it (default false).
 */

// -- the transport seam ---------------------------------------------------------------

/**
 * How a Client reaches the gateway. The client owns subscriptions, positions, the
 * outbox, status and errors; a transport only opens and closes streams and moves
 * frames, reporting back through the client's `_`-methods (see client.js).
 * @typedef {object} Transport
 * @property {TransportName} name
 * @property {boolean} canPublish Whether `send` can carry `publish` messages.
 * @property {() => void} start Connect (again): after construction, a resume or a fallback.
 * @property {(code?: number, reason?: string) => void} stop Close everything and stay closed until `start`.
 * @property {(sub: import('./subscription.js').Subscription) => void} subscribe Start streaming `sub` (now or when connected).
 * @property {(sub: import('./subscription.js').Subscription) => void} unsubscribe Stop streaming `sub`.
 * @property {(frame: object) => boolean} send Send a message now; false when it cannot (not connected).
 */

export {};
