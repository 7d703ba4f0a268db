// Presence and broadcast between supabase-js clients on two gateway nodes of one database.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { client, done, subscribed, waiter } from './helpers.mjs'

const SECOND = process.env.PGCAST_SUPABASE_URL_2

test('presence and broadcast cross gateway nodes', { skip: !SECOND && 'one node' }, async () => {
  const alice = client() // node 1
  const bob = client({}, SECOND) // node 2
  const { until, wake } = waiter()
  const heard = []
  const roomA = alice
    .channel('room-nodes', { config: { presence: { key: 'alice' } } })
    .on('presence', { event: 'sync' }, wake)
    .on('broadcast', { event: 'hello' }, (message) => {
      heard.push(message.payload)
      wake()
    })
  const roomB = bob
    .channel('room-nodes', { config: { presence: { key: 'bob' } } })
    .on('presence', { event: 'sync' }, wake)
  await subscribed(roomA)
  await subscribed(roomB)
  await roomA.track({ where: 'node 1' })
  await roomB.track({ where: 'node 2' })
  const both = () => Object.keys(roomA.presenceState()).length === 2
  await until(() => (both() && Object.keys(roomB.presenceState()).length === 2 ? true : undefined), 15000, 'sync')
  assert.equal(roomA.presenceState().bob[0].where, 'node 2')
  assert.equal(roomB.presenceState().alice[0].where, 'node 1')

  await roomB.send({ type: 'broadcast', event: 'hello', payload: { from: 'node 2' } })
  await until(() => (heard.length ? true : undefined), 15000, 'broadcast')
  assert.deepEqual(heard, [{ from: 'node 2' }])

  await bob.realtime.disconnect()
  await until(() => (Object.keys(roomA.presenceState()).length === 1 ? true : undefined), 15000, 'leave')
  await done(alice, bob)
})
