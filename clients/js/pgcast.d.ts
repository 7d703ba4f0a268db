// Type declarations for pgcast.js (the pgcast browser client).

export type Row = Record<string, unknown>;

export type Operation = 'INSERT' | 'UPDATE' | 'DELETE' | 'TRUNCATE';

/** `connecting | live | offline`, and `closed` once `close()` ran or the gateway refused the client (4500-4999). */
export type Status = 'connecting' | 'live' | 'offline' | 'closed';

export type Transport = 'auto' | 'websocket' | 'sse';

// -- frames (docs/protocol.md) --------------------------------------------------------

export interface WelcomeFrame {
  type: 'welcome';
  version: number;
  server: string;
  position: string | null;
}

export interface ChangeFrame<R extends Row = Row> {
  type: 'change';
  sub: string;
  /** The change id: the resume position, a decimal string. */
  id: string;
  schema: string;
  table: string;
  op: Operation;
  /** New row (INSERT, UPDATE); null for DELETE and TRUNCATE. */
  record: R | null;
  /** Old row (UPDATE, DELETE); null for INSERT and TRUNCATE. */
  old_record: R | null;
  changed: string[] | null;
  txid: string;
  committed_at: string;
}

export interface SnapshotFrame<R extends Row = Row> {
  type: 'snapshot';
  sub: string;
  /** 0, 1, 2...; part 0 means a new snapshot: reset your copy. */
  part: number;
  rows: R[];
  done: boolean;
  position: string | null;
}

export interface SubscribedFrame {
  type: 'subscribed';
  id: string;
  schema?: string;
  table?: string;
  channel?: string;
  replayed?: number;
  snapshot_rows?: number;
  position?: string | null;
}

export interface ResyncFrame {
  type: 'resync';
  sub: string;
  reason: string;
}

export interface MessageFrame {
  type: 'message';
  sub: string;
  channel: string;
  /** The NOTIFY payload exactly as sent (never parsed); "" when none. */
  payload: string;
}

export interface ErrorFrame {
  type: 'error';
  id: string | null;
  code: string;
  message: string;
}

// -- errors ---------------------------------------------------------------------------

/**
 * Every error the client reports. `code` is the gateway's error code (`bad_filter`,
 * `unknown_table`, `not_supported`, ...) or one of the client's: `rejected` (a
 * 4500-4999 close or HTTP 401/403; see `closeCode`), `frame_too_big` (close 1009),
 * `queue_full`, `closed`, `sse_fallback` (informational), `token`, `connect`,
 * `no_websocket`, `bad_url`, `bad_option`, `bad_request`.
 */
export class PgcastError extends Error {
  constructor(code: string, message: string, options?: { hint?: string; closeCode?: number; id?: string; frame?: unknown });
  code: string;
  hint?: string;
  /** The WebSocket close code that caused it, if any. */
  closeCode?: number;
  /** The id of the refused message (subscription wire id or publish id). */
  id?: string;
  /** The gateway's `error` frame, if it came from one. */
  frame?: ErrorFrame;
}

export class FilterError extends PgcastError {
  code: 'bad_filter';
}

// -- pure helpers ---------------------------------------------------------------------

export interface BackoffOptions {
  /** First delay in ms (default 100). */
  initialMs?: number;
  /** Cap in ms (default 10000). */
  maxMs?: number;
  /** Growth per attempt (default 2). */
  factor?: number;
  /** Randomized share of each delay, 0..1 (default 0.5: equal jitter). */
  jitter?: number;
}

export const DEFAULT_BACKOFF: Readonly<Required<BackoffOptions>>;

/** Delay (ms) before retry `attempt` (0-based): within [nominal * (1 - jitter), nominal], never above maxMs. */
export function backoffDelay(attempt: number, options?: BackoffOptions, random?: () => number): number;

/** Endless reconnect delays (ms); create a new iterator to reset after a success. */
export function backoff(options?: BackoffOptions, random?: () => number): Generator<number, never, unknown>;

/** The client's policy for a close code (null/undefined: no close frame). */
export function closeAction(code: number | null | undefined): 'reconnect' | 'terminal' | 'frame_too_big';

/** Bounded LRU of recently delivered change ids. */
export class RecentIds {
  constructor(capacity?: number);
  readonly capacity: number;
  /** Remember `id`; false if it was already remembered (a duplicate). */
  add(id: string | number): boolean;
  has(id: string | number): boolean;
  readonly size: number;
}

export const FILTER_OPERATORS: readonly ['eq', 'neq', 'lt', 'lte', 'gt', 'gte', 'in', 'is'];

export interface FilterCondition {
  readonly column: string;
  readonly op: 'eq' | 'neq' | 'lt' | 'lte' | 'gt' | 'gte' | 'in' | 'is';
  readonly values: readonly string[];
  readonly negate: boolean;
}

export interface ParsedFilter {
  readonly conditions: readonly FilterCondition[];
  /** The columns the filter reads. */
  readonly columns: readonly string[];
  /** Same semantics as the gateway; a null/undefined row never matches. */
  matches(row: Row | null | undefined): boolean;
  toString(): string;
}

/** Parse a PostgREST-style filter (`status=eq.pending&amount=gt.100`); throws FilterError. */
export function parseFilter(text: string | null | undefined): ParsedFilter;

export function matchesFilter(filter: string | ParsedFilter | null | undefined, row: Row | null | undefined): boolean;

export type KeyOption<R extends Row = Row> = string | ((row: R) => unknown);

/** Rows of a table built from snapshot and change frames, by primary key. */
export class TableMirror<R extends Row = Row> {
  constructor(options?: { filter?: string | ParsedFilter | null; key?: KeyOption<R> });
  readonly filter: ParsedFilter;
  /** Incremented on every visible change. */
  readonly version: number;
  readonly size: number;
  /** Apply a snapshot frame (part 0 starts over); true when the visible rows changed (on `done`). */
  applySnapshot(frame: SnapshotFrame<R>): boolean;
  /** Apply a change frame; true when the visible rows changed. */
  applyChange(frame: ChangeFrame<R>): boolean;
  clear(): void;
  get(key: unknown): R | undefined;
  rows(): R[];
}

/** The gateway WebSocket URL (ws(s)://.../ws) for `url`, resolved against `base` (default: location). */
export function normalizeUrl(url?: string | null, base?: string): string;

/** The SSE URL for one subscription request. */
export function sseUrl(wsUrl: string, request: TableRequest | { channel: string }, options?: { since?: string | null; token?: string | null }): string;

// -- client ---------------------------------------------------------------------------

export interface ClientOptions {
  /** Gateway URL: ws(s)://host:port, http(s)://..., a path ("/ws"), or omitted (same origin) in a browser. */
  url?: string;
  /** Sent as `?token=` on every connect. */
  token?: string;
  /** Awaited before every connect (and every SSE stream); its result is used as the token. */
  getToken?: () => string | null | undefined | Promise<string | null | undefined>;
  /** WebSocket constructor (default: globalThis.WebSocket; under Node 20 pass the `ws` package's). */
  WebSocket?: unknown;
  /** EventSource constructor for the SSE fallback (default: globalThis.EventSource). */
  EventSource?: unknown;
  /** Send a ping after this many ms of connection (default 20000; 0 disables). */
  heartbeatMs?: number;
  /** Drop the connection if no frame at all arrives this long after a ping (default 10000). */
  heartbeatTimeoutMs?: number;
  /** Give up on a connection that sent no `welcome` within this time (default 10000). */
  openTimeoutMs?: number;
  backoff?: BackoffOptions;
  /** Disconnect while `document.hidden`, reconnect and resume when visible (default false). */
  pauseWhenHidden?: boolean;
  /** Document to watch for visibility (default: globalThis.document). */
  document?: { hidden: boolean; addEventListener(type: string, cb: () => void): void; removeEventListener(type: string, cb: () => void): void } | null;
  /** 'auto' (default): WebSocket, SSE after `sseAfterFailures` failed handshakes in a row. */
  transport?: Transport;
  /** Consecutive WebSocket handshake failures before the SSE fallback (default 3). */
  sseAfterFailures?: number;
  /** Outgoing messages kept while offline (default 1000; the oldest is dropped, reported as `queue_full`). */
  queueSize?: number;
  /** Change ids remembered per subscription to drop replayed duplicates (default 10000). */
  dedupeWindow?: number;
  /** Random source for the backoff jitter (tests). */
  random?: () => number;
}

export interface TableRequest {
  table: string;
  schema?: string;
  /** PostgREST syntax: `status=eq.pending&amount=gt.100`. */
  filter?: string;
  events?: Operation[] | Lowercase<Operation>[];
  columns?: string[];
  /** Start with the table's rows (`snapshot` frames), then changes. */
  snapshot?: boolean;
  /** Resume after this change id (excludes `snapshot`). */
  since?: string | number;
}

export interface SubscriptionHandlers<R extends Row = Row> {
  /** Each change once (replayed duplicates are dropped), in delivery order. */
  onChange?: (change: ChangeFrame<R>) => void;
  /** Snapshot chunks; `part === 0` starts a new snapshot (reset your copy). */
  onSnapshot?: (frame: SnapshotFrame<R>) => void;
  /** The log no longer covers the resume position: rebuild your state from the source. */
  onResync?: (frame: ResyncFrame) => void;
  /** The subscription is live (after every (re)subscribe). */
  onSubscribed?: (frame: SubscribedFrame) => void;
  /** Refused by the gateway, or the client was rejected/closed. Final for this subscription. */
  onError?: (error: PgcastError) => void;
}

export type SubscriptionState = 'pending' | 'live' | 'closed' | 'failed';

export interface Subscription {
  /** Client-side id; wire ids are `id`, then `id-2`, `id-3`... per resubscribe. */
  readonly id: string;
  readonly state: SubscriptionState;
  /** The id of the last change delivered. */
  readonly lastId: string | null;
  /** Where it resumes from when no change was delivered yet. */
  readonly resumeFrom: string | null;
  /** Replayed changes dropped as duplicates. */
  readonly duplicates: number;
  readonly error: PgcastError | null;
  unsubscribe(): void;
}

export interface TableWatch<R extends Row = Row> {
  readonly mirror: TableMirror<R>;
  readonly subscription: Subscription;
  unsubscribe(): void;
}

export interface WatchTableRequest<R extends Row = Row> extends Omit<TableRequest, 'snapshot' | 'since'> {
  /** Primary key column (default "id") or a function returning the key. */
  key?: KeyOption<R>;
}

export interface WatchTableHandlers<R extends Row = Row> {
  onRows?: (rows: R[], mirror: TableMirror<R>) => void;
  onChange?: (change: ChangeFrame<R>) => void;
  onSubscribed?: (frame: SubscribedFrame) => void;
  onError?: (error: PgcastError) => void;
}

export interface Channel {
  readonly name: string;
  on(event: 'message', callback: (frame: MessageFrame) => void): () => void;
  on(event: 'error', callback: (error: PgcastError) => void): () => void;
  on(event: 'subscribed', callback: (frame: SubscribedFrame) => void): () => void;
  off(event: 'message' | 'error' | 'subscribed', callback: (...args: any[]) => void): void;
  /** Sends `{"type":"publish","id","channel","payload"}` (objects are JSON-encoded); queued while offline. Returns the message id. */
  publish(payload: unknown): string | null;
  close(): void;
}

export class Client {
  constructor(options?: ClientOptions);
  /** The normalized WebSocket URL. */
  readonly url: string;
  readonly status: Status;
  readonly transport: 'websocket' | 'sse';
  /** The change-log position of the first `welcome`. */
  readonly position: string | null;
  /** The error that closed the client, if the gateway refused it. */
  readonly error: PgcastError | null;

  on(event: 'status', callback: (status: Status) => void): () => void;
  on(event: 'resync', callback: (frame: ResyncFrame, subscription: Subscription) => void): () => void;
  on(event: 'error', callback: (error: PgcastError) => void): () => void;
  off(event: 'status' | 'resync' | 'error', callback: (...args: any[]) => void): void;

  subscribe<R extends Row = Row>(request: TableRequest, handlers?: SubscriptionHandlers<R>): Subscription;
  /** A live mirror: snapshot + changes by key, filter exits removed, re-snapshot on resync. Throws FilterError. */
  watchTable<R extends Row = Row>(request: WatchTableRequest<R>, handlers?: WatchTableHandlers<R>): TableWatch<R>;
  channel(name: string): Channel;
  close(): void;
}

export function createClient(options?: ClientOptions): Client;

/** The shared client for `url` (same instance until closed); `options` apply only when it is created. */
export function getClient(url?: string | null, options?: Omit<ClientOptions, 'url'>): Client;

export function closeAllClients(): void;
