// Type declarations for react.js (pgcast React hooks).

import type {
  ChangeFrame,
  Client,
  ClientOptions,
  KeyOption,
  MessageFrame,
  Operation,
  PgcastError,
  ResyncFrame,
  Row,
  Status,
} from './pgcast.js';

export interface ConnectionOptions {
  /** Gateway URL; omitted in a browser: the page's origin. One shared client per URL. */
  url?: string;
  token?: string;
  getToken?: ClientOptions['getToken'];
  /** Other client options; they apply only when the URL's client is first created. */
  clientOptions?: Omit<ClientOptions, 'url' | 'token' | 'getToken'>;
}

export interface UseTableOptions<R extends Row = Row> extends ConnectionOptions {
  filter?: string;
  schema?: string;
  columns?: string[];
  events?: Operation[];
  /** Primary key column (default "id") or a function returning the key. */
  key?: KeyOption<R>;
}

export interface UseTableResult<R extends Row = Row> {
  rows: R[];
  status: Status;
  error: PgcastError | null;
  /** True once the first snapshot is complete. */
  ready: boolean;
}

export function useTable<R extends Row = Row>(table: string, options?: UseTableOptions<R>): UseTableResult<R>;

export interface UseChangesOptions<R extends Row = Row> extends ConnectionOptions {
  filter?: string;
  schema?: string;
  columns?: string[];
  events?: Operation[];
  onInsert?: (record: R, change: ChangeFrame<R>) => void;
  onUpdate?: (record: R, oldRecord: R | null, change: ChangeFrame<R>) => void;
  onDelete?: (oldRecord: R, change: ChangeFrame<R>) => void;
  onTruncate?: (change: ChangeFrame<R>) => void;
  onChange?: (change: ChangeFrame<R>) => void;
  onResync?: (frame: ResyncFrame) => void;
}

export function useChanges<R extends Row = Row>(
  table: string,
  options?: UseChangesOptions<R>,
): { status: Status; error: PgcastError | null };

export function useChannel(
  name: string,
  onMessage: ((payload: string, frame: MessageFrame) => void) | null | undefined,
  options?: ConnectionOptions,
): { publish: (payload: unknown) => string | null; status: Status; error: PgcastError | null };

export function useClient(options?: ConnectionOptions): Client;

export function useGatewayStatus(options?: ConnectionOptions): Status;
