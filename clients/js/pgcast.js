// pgcast browser client: one resumable connection per gateway URL, over WebSocket
// or Server-Sent Events. Plain ES modules with no imports outside this folder and
// no Node-only APIs: they run unchanged in browsers; Node tests inject `WebSocket` /
// `EventSource` constructors.
//
// This file is the public entry point; the modules behind it (src/):
// - errors.js: PgcastError, FilterError (one error tree);
// - backoff.js: reconnect delays and the close-code policy (pure);
// - filters.js: the filter evaluator, PostgREST syntax, the gateway's semantics (pure);
// - mirror.js: TableMirror (snapshot + changes by primary key) and watchTable;
// - urls.js: the gateway's WebSocket and SSE URLs;
// - subscription.js: Subscription (resume position, duplicate ids), Channel;
// - topic.js: Topic (presence and broadcast on one topic), applyPresenceDiff;
// - position.js: a snapshot position and the changes it already holds (pure);
// - client.js: Client, the connection model every transport shares, and the per-URL registry;
// - websocket-transport.js, sse-transport.js: the two transports;
// - types.js: the frame, request and option shapes (types only).
//
// The wire contract is docs/protocol.md; close codes are docs/close-codes.md.

export * from './src/types.js';
export { PgcastError, FilterError } from './src/errors.js';
export { DEFAULT_BACKOFF, backoff, backoffDelay, closeAction } from './src/backoff.js';
export { FILTER_OPERATORS, parseFilter, matchesFilter } from './src/filters.js';
export { TableMirror } from './src/mirror.js';
export { RecentIds } from './src/subscription.js';
export { Topic, applyPresenceDiff } from './src/topic.js';
export { normalizeUrl, sseUrl } from './src/urls.js';
export { Client, createClient, getClient, closeAllClients } from './src/client.js';
