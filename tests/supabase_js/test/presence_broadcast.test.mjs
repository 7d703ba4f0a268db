// Presence and broadcast between two unmodified supabase-js clients on one topic.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { client, done, subscribed, waiter } from './helpers.mjs'

function keys(channel) {
  return Object.keys(channel.presenceState()).sort()
}

test('presence syncs between two clients, and one that disconnects leaves', async () => {
  const alice = client()
  const bob = client()
  const { until, wake } = waiter()
  const leaves = []
  const roomA = alice
    .channel('room-presence', { config: { presence: { key: 'alice' } } })
    .on('presence', { event: 'sync' }, wake)
    .on('presence', { event: 'leave' }, (payload) => {
      leaves.push(payload)
      wake()
    })
  const roomB = bob
    .channel('room-presence', { config: { presence: { key: 'bob' } } })
    .on('presence', { event: 'sync' }, wake)
  await subscribed(roomA)
  await subscribed(roomB)
  assert.equal(await roomA.track({ name: 'Alice', online_at: 1 }), 'ok')
  assert.equal(await roomB.track({ name: 'Bob' }), 'ok')
  await until(() => (keys(roomA).length === 2 && keys(roomB).length === 2 ? true : undefined), 10000, 'sync')
  assert.deepEqual(keys(roomA), ['alice', 'bob'])
  const [bobSeen] = roomA.presenceState().bob
  assert.equal(bobSeen.name, 'Bob')
  assert.ok(bobSeen.presence_ref, 'presence_ref is set')
  assert.equal(roomB.presenceState().alice[0].online_at, 1)

  // Bob's connection goes away without leaving: Alice sees him leave.
  await bob.realtime.disconnect()
  await until(() => (keys(roomA).length === 1 ? true : undefined), 10000, 'leave')
  assert.deepEqual(keys(roomA), ['alice'])
  assert.ok(leaves.some((l) => l.key === 'bob'))

  // Untrack takes Alice out of her own view too.
  assert.equal(await roomA.untrack(), 'ok')
  await until(() => (keys(roomA).length === 0 ? true : undefined), 10000, 'untrack')
  await done(alice, bob)
})

test('broadcast reaches the other client, and the sender only with self', async () => {
  const alice = client()
  const bob = client()
  const { until, wake } = waiter()
  const got = { alice: [], bob: [] }
  const roomA = alice
    .channel('room-broadcast', { config: { broadcast: { self: true, ack: true } } })
    .on('broadcast', { event: 'cursor' }, (message) => {
      got.alice.push(message)
      wake()
    })
  const roomB = bob.channel('room-broadcast').on('broadcast', { event: 'cursor' }, (message) => {
    got.bob.push(message)
    wake()
  })
  await subscribed(roomA)
  await subscribed(roomB)
  const ack = await roomA.send({ type: 'broadcast', event: 'cursor', payload: { x: 1, y: 2 } })
  assert.equal(ack, 'ok') // ack: true waits for the server's reply
  await until(() => (got.alice.length && got.bob.length ? true : undefined), 10000, 'broadcast')
  assert.deepEqual(got.bob[0].payload, { x: 1, y: 2 })
  assert.equal(got.bob[0].event, 'cursor')
  assert.equal(got.bob[0].type, 'broadcast')
  assert.deepEqual(got.alice[0].payload, { x: 1, y: 2 })

  await roomB.send({ type: 'broadcast', event: 'cursor', payload: { from: 'bob' } })
  await roomB.send({ type: 'broadcast', event: 'other', payload: { ignored: true } })
  await until(() => (got.alice.length >= 2 ? true : undefined), 10000, "bob's broadcast")
  assert.deepEqual(got.alice[1].payload, { from: 'bob' })
  assert.equal(got.bob.length, 1) // no self: bob does not get his own
  await done(alice, bob)
})
