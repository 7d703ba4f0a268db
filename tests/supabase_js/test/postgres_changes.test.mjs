// postgres_changes through the unmodified supabase-js: INSERT, UPDATE, DELETE, with and
// without a filter, values converted by supabase-js from the PostgreSQL type names.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { client, done, sql, subscribed, waiter } from './helpers.mjs'

// The rows `reset` writes are committed just before the channel joins: the gateway
// may still deliver them to it (a join without a position starts from what the
// gateway reads next, not from the join's instant). Each test keeps only the changes
// of rows it wrote itself.
const seedIds = (rows) => new Set(rows.map((row) => row.id))
const ownRow = (seeded) => (payload) => !seeded.has(payload.new.id ?? payload.old.id)

test('INSERT, UPDATE and DELETE reach an unfiltered and a filtered binding', async () => {
  const own = ownRow(seedIds(await sql('reset')))
  const supabase = client()
  const all = []
  const filtered = []
  const systems = []
  const { until, wake } = waiter()
  const channel = supabase
    .channel('orders-all')
    .on('postgres_changes', { event: '*', schema: 'public', table: 'orders' }, (payload) => {
      if (own(payload)) all.push(payload)
      wake()
    })
    .on(
      'postgres_changes',
      { event: '*', schema: 'public', table: 'orders', filter: 'merchant_id=eq.10' },
      (payload) => {
        if (own(payload)) filtered.push(payload)
        wake()
      }
    )
    .on('system', {}, (payload) => {
      systems.push(payload)
      wake()
    })
  await subscribed(channel)
  await until(() => systems.find((s) => s.message === 'Subscribed to PostgreSQL'), 10000, 'system')
  const system = systems.find((s) => s.message === 'Subscribed to PostgreSQL')
  assert.equal(system.extension, 'postgres_changes')
  assert.equal(system.status, 'ok')
  assert.equal(system.channel, 'orders-all')

  const [inserted] = await sql('insert', { merchant_id: 10, status: 'new' })
  await sql('insert', { merchant_id: 20, status: 'other' })
  await sql('update', { id: inserted.id, status: 'paid' })
  await sql('delete', { id: inserted.id })
  await until(() => (all.length >= 4 && filtered.length >= 3 ? true : undefined), 10000, 'changes')

  assert.deepEqual(
    all.map((p) => p.eventType),
    ['INSERT', 'INSERT', 'UPDATE', 'DELETE']
  )
  assert.deepEqual(
    filtered.map((p) => p.eventType),
    ['INSERT', 'UPDATE', 'DELETE']
  )
  const [insert, , update, del] = all
  assert.equal(insert.schema, 'public')
  assert.equal(insert.table, 'orders')
  assert.equal(insert.errors, null)
  assert.match(insert.commit_timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/)
  // Converted by supabase-js from the column types (int4, text, bool, numeric, jsonb...).
  assert.equal(insert.new.id, inserted.id)
  assert.equal(insert.new.merchant_id, 10)
  assert.equal(insert.new.status, 'new')
  assert.equal(insert.new.paid, false)
  assert.deepEqual(insert.new.meta, { tags: ['a'] })
  assert.deepEqual(insert.old, {})
  assert.equal(update.new.status, 'paid')
  assert.equal(update.old.status, 'new')
  assert.deepEqual(del.new, {})
  assert.equal(del.old.id, inserted.id)
  assert.ok(filtered.every((p) => (p.new.merchant_id ?? p.old.merchant_id) === 10))
  await done(supabase)
})

test('a binding for one event gets only that event', async () => {
  const own = ownRow(seedIds(await sql('reset')))
  const supabase = client()
  const events = []
  const { until, wake } = waiter()
  const channel = supabase
    .channel('orders-inserts')
    .on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'orders' }, (p) => {
      events.push(p)
      wake()
    })
  await subscribed(channel)
  const [row] = await sql('insert', { merchant_id: 30, status: 'x' })
  await sql('update', { id: row.id, status: 'y' })
  const [second] = await sql('insert', { merchant_id: 31, status: 'z' })
  const inserts = () => events.filter(own)
  await until(() => (inserts().length >= 2 ? true : undefined), 10000, 'inserts')
  // The seed rows' INSERTs may come too; no UPDATE ever does.
  assert.ok(events.every((p) => p.eventType === 'INSERT'))
  assert.deepEqual(
    inserts().map((p) => [p.eventType, p.new.id]),
    [
      ['INSERT', row.id],
      ['INSERT', second.id],
    ]
  )
  await done(supabase)
})
