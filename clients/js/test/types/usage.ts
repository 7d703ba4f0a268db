// Compiled, never run (test/declarations.test.js runs tsc on it, strict): the
// public API as a TypeScript user sees it through package.json's "exports",
// so a declaration that loses a type or an export fails the tests.
import {
  type ChangeFrame,
  type ClientOptions,
  type Status,
  Client,
  FilterError,
  PgcastError,
  TableMirror,
  backoff,
  closeAction,
  createClient,
  getClient,
  parseFilter,
} from '@pgcast/client';
import { useBroadcast, useChanges, useChannel, usePresence, useTable } from '@pgcast/client/react';

interface Order extends Record<string, unknown> {
  id: number;
  status: string;
}

const options: ClientOptions = { url: 'ws://127.0.0.1:8000', transport: 'auto', backoff: { initialMs: 50 } };
const client: Client = createClient(options);
const status: Status = client.status;
const transport: 'websocket' | 'sse' = client.transport;
const off: () => void = client.on('status', () => {});
off();

const sub = client.subscribe<Order>({ table: 'orders', filter: 'status=eq.pending', snapshot: true }, {
  onChange: (change: ChangeFrame<Order>) => {
    const id: number | undefined = change.record?.id;
    void id;
  },
  onError: (error: PgcastError) => void error.code,
});
const lastId: string | null = sub.lastId;
sub.unsubscribe();

const watch = client.watchTable<Order>({ table: 'orders', key: 'id' }, { onRows: (rows: Order[]) => void rows.length });
const rows: Order[] = watch.mirror.rows();
watch.unsubscribe();

const id: string | null = client.channel('news').publish({ level: 'info' });
const delays: Generator<number, never, unknown> = backoff({ maxMs: 1000 });
const action: 'reconnect' | 'terminal' | 'frame_too_big' = closeAction(4501);
const matches: boolean = parseFilter('amount=gt.100').matches({ amount: 101 });
const mirror = new TableMirror<Order>({ filter: 'status=eq.pending' });
const refused: boolean = new FilterError('bad') instanceof PgcastError;
const shared: Client = getClient('/ws', { heartbeatMs: 0 });

const room = client.topic('room:1', { self: true, ack: true });
room.track({ typing: false }, { key: 'alice' });
const offBroadcast: () => void = room.on('broadcast', (event: string, payload: unknown) => void [event, payload]);
const sent: Promise<void> = room.broadcast('cursor', { x: 1 });
const here: string[] = Object.keys(room.presence);
const refs: string[] = (room.presence.alice?.metas ?? []).map((meta) => meta.phx_ref);

function Room() {
  const { presence, track } = usePresence('room:1', { state: { online: true }, key: 'alice' });
  const { send } = useBroadcast('room:1', (event: string) => void event, { self: false });
  track({ typing: true });
  const done: Promise<void> = send('typing', null);
  return [Object.keys(presence), done];
}

function Orders() {
  const table: { rows: Order[]; ready: boolean } = useTable<Order>('orders', { filter: 'status=neq.cancelled' });
  const changes = useChanges<Order>('orders', { onInsert: (record: Order) => void record.id });
  const { publish } = useChannel('news', (payload: string) => void payload.length);
  return [table, changes, publish];
}

void [status, transport, lastId, rows, id, delays, action, matches, mirror, refused, shared, Orders];
void [offBroadcast, sent, here, refs, Room];
