// Shared by the supabase-js scenarios: the unmodified client from npm, pointed at a live
// pgcast gateway (PGCAST_SUPABASE_URL), and the test's control channel for SQL writes.
import { createClient } from '@supabase/supabase-js'
import WebSocket from 'ws'

export const URL = process.env.PGCAST_SUPABASE_URL
export const CONTROL = process.env.PGCAST_LIVE_CONTROL
export const KEY = process.env.PGCAST_SUPABASE_KEY || 'anon'
export const VSN = process.env.PGCAST_SUPABASE_VSN || '2.0.0'

if (!URL || !CONTROL) throw new Error('PGCAST_SUPABASE_URL and PGCAST_LIVE_CONTROL must be set')

// `url`: another gateway node of the same database (PGCAST_SUPABASE_URL_2), say.
export function client(options = {}, url = URL) {
  return createClient(url, KEY, {
    realtime: { transport: WebSocket, vsn: VSN, timeout: 10000, ...options },
    auth: { persistSession: false, autoRefreshToken: false },
  })
}

export async function sql(op, body = {}) {
  const response = await fetch(`${CONTROL}/${op}`, { method: 'POST', body: JSON.stringify(body) })
  const answer = await response.json()
  if (!response.ok) throw new Error(`control ${op}: ${answer.error}`)
  return answer.rows
}

// Resolves with the first value `take()` returns that is not undefined, polled as events
// arrive (each callback calls `wake`); rejects after `ms`.
export function waiter() {
  let wake = () => {}
  const until = (take, ms = 10000, what = 'event') =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms)
      const check = () => {
        const value = take()
        if (value !== undefined) {
          clearTimeout(timer)
          wake = () => {}
          resolve(value)
        }
      }
      wake = check
      check()
    })
  return { until, wake: () => wake() }
}

export function subscribed(channel, ms = 10000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('subscribe timed out')), ms)
    channel.subscribe((status, err) => {
      if (status === 'SUBSCRIBED') {
        clearTimeout(timer)
        resolve(status)
      } else if (status === 'CHANNEL_ERROR' || status === 'TIMED_OUT') {
        clearTimeout(timer)
        reject(err || new Error(status))
      }
    })
  })
}

// Leave every channel and close the socket now (supabase-js would otherwise keep it
// open for a while, and node would wait for it before exiting).
export async function done(...clients) {
  for (const c of clients) {
    await c.removeAllChannels()
    await c.realtime.disconnect()
  }
}
