/** Shared set-up for the instance, subdomain and tunnel route tests. */
import type { Test } from 'tap'
import { generatePrivateKey, publicKeyFromPrivate } from '../../../proto/noise/keys.ts'
import type { Db } from '../../../control/db/knex.ts'
import type { Subscription, SubscriptionSource } from '../../../control/services/plans.ts'
import { bearer, signUp, startApp, type Reply, type TestApp } from '../harness.ts'

/** The gateway key the app is configured with (any valid key; this one is the spec's example). */
export const GATEWAY_KEY = '1y8JgBgNarojHK12KYbAAy+7HqZq2HGsE0Qw24toBXo='
export const GATEWAY_ENDPOINT = 'connect.erugo.test:51820'
export const BASE_DOMAIN = 'erugo.test'

export const INSTANCE_ID = /^inst_[0-9A-Za-z]{22}$/
export const ISO_SECONDS = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/

/** A fresh WireGuard public key as `wg pubkey` would print it. */
export function newPublicKey (): string {
  return publicKeyFromPrivate(generatePrivateKey()).toString('base64')
}

/** A settable clock for the whole app (tokens, limits, statuses). */
export class Clock {
  time: number
  constructor (start = Date.parse('2026-03-01T12:00:00Z')) { this.time = start }
  now = (): Date => new Date(this.time)
  advance (seconds: number): void { this.time += seconds * 1000 }
}

export interface InstanceAppOptions {
  env?: Record<string, string>
  /** Plan per user id; default Free for everyone. */
  plans?: Map<string, Subscription> | Subscription
  clock?: Clock
}

export async function startInstanceApp (t: Test, db: Db, options: InstanceAppOptions = {}): Promise<TestApp> {
  const plans = options.plans
  const subscriptions: SubscriptionSource | undefined = plans === undefined
    ? undefined
    : async (_db, userId) => (plans instanceof Map ? plans.get(userId) : plans) ?? { plan: 'free', status: 'none' }
  return await startApp(t, db, {
    env: { CC_GATEWAY_PUBLIC_KEY: GATEWAY_KEY, CC_GATEWAY_ENDPOINT: GATEWAY_ENDPOINT, CC_BASE_DOMAIN: BASE_DOMAIN, ...options.env },
    deps: { subscriptions, now: options.clock?.now },
  })
}

let userCounter = 0

/** A verified, signed-in user; returns its id and access token. */
export async function newUser (h: TestApp, label = 'user'): Promise<{ id: string, token: string }> {
  const login = await signUp(h, `${label}-${process.pid}-${++userCounter}@example.com`, { verify: true })
  return { id: login.user.id, token: login.access_token }
}

export async function createInstance (h: TestApp, token: string, subdomain: string, name = 'My Erugo Server'): Promise<Reply> {
  return await h.request('POST', '/v1/instances', { name, subdomain }, bearer(token))
}

/** Creates an instance and fails the test unless it is 201; returns the body. */
export async function mustCreate (t: Test, h: TestApp, token: string, subdomain: string): Promise<{ id: string, token: string, tunnelIp: string, body: any }> { // eslint-disable-line @typescript-eslint/no-explicit-any
  const res = await createInstance(h, token, subdomain)
  if (res.status !== 201) t.fail(`create ${subdomain}: ${res.status} ${res.raw}`)
  return { id: res.body.instance.id, token: res.body.credentials.instance_token, tunnelIp: res.body.instance.tunnel_ip, body: res.body }
}
