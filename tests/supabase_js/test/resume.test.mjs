// Lossless resume, beyond Supabase: the binding carries `pgcast_since` (supabase-js sends a
// binding's keys to the server as given, and rejoins with the same binding object after a
// reconnect), and each change's position arrives as the callback's second argument.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { client, done, sql, subscribed, waiter } from './helpers.mjs'

test('a client that loses its connection gets every change written meanwhile, once', async () => {
  await sql('reset')
  const supabase = client()
  // Merchant 1's orders only: the rows `reset` writes (merchants 10 and 20) stay out.
  const binding = { event: '*', schema: 'public', table: 'orders', filter: 'merchant_id=eq.1' }
  const seen = new Set() // change positions already applied (a resume may repeat some)
  const received = []
  const { until, wake } = waiter()
  const channel = supabase.channel('orders-resume').on('postgres_changes', binding, (payload, position) => {
    if (seen.has(position)) return
    seen.add(position)
    binding.pgcast_since = position // the rejoin after a reconnect resumes from here
    received.push(payload)
    wake()
  })
  await subscribed(channel)
  const [first] = await sql('insert', { merchant_id: 1, status: 'before' })
  await until(() => (received.length >= 1 ? true : undefined), 10000, 'first change')
  assert.match(binding.pgcast_since, /^pgcast:\d+$/)

  // The gateway drops every connection (TCP abort), then rows are written while this
  // client is away; supabase-js reconnects by itself and rejoins.
  const written = await sql('drop_and_write', { rows: 3 })
  await until(() => (received.length >= 4 ? true : undefined), 20000, 'changes written while away')
  const [after] = await sql('insert', { merchant_id: 1, status: 'after' })
  await until(() => (received.length >= 5 ? true : undefined), 10000, 'change after the resume')

  assert.deepEqual(
    received.map((p) => p.new.id),
    [first.id, ...written.map((row) => row.id), after.id]
  )
  assert.equal(new Set(received.map((p) => p.new.id)).size, received.length)
  await done(supabase)
})
