/**
 * Test harness for the control API. `forEachDatabase` runs a body against a fresh in-memory PGlite
 * database, and against real Postgres in a fresh schema when CC_TEST_DATABASE_URL is set (each
 * test file gets its own schemas, so files run in parallel). Without the URL the Postgres leg is
 * skipped with the reason printed; with CC_REQUIRE_INTEROP=1 it fails instead.
 */
import type { Test } from 'tap'
import { mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createHash, randomBytes } from 'node:crypto'
import { PGlite } from '@electric-sql/pglite'
import pino from 'pino'
import knexFactory from 'knex'
import { createApp, type AppDeps, type ControlApp } from '../../control/app.ts'
import { loadConfig, type ControlConfig } from '../../control/config.ts'
import { createDb, type Db } from '../../control/db/knex.ts'
import { migrateLatest } from '../../control/db/migrate.ts'
import type { Services } from '../../control/services/index.ts'
import type { MailMessage, MailTransport } from '../../control/services/mail.ts'
import { ERROR_CODES, ERROR_STATUS, type ErrorCode } from '../../proto/api/errors.ts'

import { postgresOrSkip, REQUIRE_INTEROP, TEST_DATABASE_URL } from '../helpers/postgres.ts'
export { REQUIRE_INTEROP, TEST_DATABASE_URL }

export type DatabaseKind = 'pglite' | 'postgres'

/** A unique lower-case schema name for this process and call. */
export function freshSchemaName (): string {
  return `cct_${process.pid}_${randomBytes(4).toString('hex')}`
}

const MIGRATIONS_DIR = fileURLToPath(new URL('../../control/db/migrations/', import.meta.url))
let pgliteTemplate: Promise<Blob> | undefined

/**
 * A migrated PGlite data directory as a tarball. A fresh PGlite runs initdb (seconds); loading
 * this is several times faster. Cached in the temp dir under a hash of the migration sources, so
 * a changed or added migration makes a new one; written to a temporary name and renamed, so
 * parallel test files never read half a file.
 */
async function migratedPgliteTemplate (): Promise<Blob> {
  pgliteTemplate ??= (async () => {
    const hash = createHash('sha256')
    for (const name of readdirSync(MIGRATIONS_DIR).sort()) hash.update(name).update(readFileSync(join(MIGRATIONS_DIR, name)))
    const file = join(tmpdir(), `cc-pglite-template-${hash.digest('hex').slice(0, 16)}.tgz`)
    try {
      return new Blob([readFileSync(file)])
    } catch {}
    const pglite = new PGlite()
    const db = createDb({ pglite })
    await migrateLatest(db)
    const blob = await pglite.dumpDataDir('gzip')
    await db.destroy()
    const temporary = `${file}.${process.pid}.${randomBytes(4).toString('hex')}`
    writeFileSync(temporary, Buffer.from(await blob.arrayBuffer()))
    renameSync(temporary, file)
    return blob
  })()
  return await pgliteTemplate
}

/** Opens a migrated database of `kind`; the teardown drops it. */
export async function openTestDatabase (t: Test, kind: DatabaseKind, options: { poolMax?: number, acquireTimeoutMs?: number, url?: string, applicationName?: string } = {}): Promise<Db> {
  if (kind === 'pglite') {
    const db = createDb({ pglite: new PGlite({ loadDataDir: await migratedPgliteTemplate() }) })
    t.teardown(async () => { await db.destroy() })
    await migrateLatest(db) // nothing to do, unless the template is stale: then it catches up
    return db
  }
  const schema = freshSchemaName()
  const db = createDb({ url: options.url ?? TEST_DATABASE_URL!, schema, poolMax: options.poolMax ?? 4, acquireTimeoutMs: options.acquireTimeoutMs, applicationName: options.applicationName })
  t.teardown(async () => {
    await db.destroy()
    const admin = knexFactory({ client: 'pg', connection: TEST_DATABASE_URL!, pool: { min: 0, max: 1 } })
    try {
      await admin.raw(`drop schema if exists "${schema}" cascade`)
    } finally {
      await admin.destroy()
    }
  })
  await migrateLatest(db)
  return db
}

/** Runs `body` once per available kind of database, each in its own subtest. */
export async function forEachDatabaseKind (t: Test, body: (t: Test, kind: DatabaseKind) => Promise<void>): Promise<void> {
  await t.test('pglite', async t => { await body(t, 'pglite') })
  if (await postgresOrSkip(t, 'postgres', 'the Postgres leg needs a real server') === undefined) return
  await t.test('postgres', async t => { await body(t, 'postgres') })
}

/** Runs `body` once per available database, each in its own subtest. */
export async function forEachDatabase (t: Test, body: (t: Test, db: Db, kind: DatabaseKind) => Promise<void>): Promise<void> {
  await forEachDatabaseKind(t, async (t, kind) => { await body(t, await openTestDatabase(t, kind), kind) })
}

/** Cheap argon2, limits far above what tests send, a private data dir. */
export function testConfig (t: Test, env: Record<string, string> = {}): ControlConfig {
  const dataDir = mkdtempSync(join(tmpdir(), 'cc-control-'))
  t.teardown(() => { rmSync(dataDir, { recursive: true, force: true }) })
  return loadConfig({
    CC_DATA_DIR: dataDir,
    CC_PUBLIC_URL: 'https://api.example.test',
    CC_PASSWORD_RESET_URL: 'https://dashboard.example.test/reset-password',
    CC_ARGON2_MEMORY_KIB: '64',
    CC_ARGON2_TIME_COST: '1',
    CC_RATE_AUTH_PER_IP: '100000/100000',
    CC_RATE_LOGIN_FAILURES_PER_ADDRESS: '100000/100000',
    CC_RATE_LOGIN_FAILURES_PER_ACCOUNT: '100000/100000',
    CC_RATE_MAIL_PER_ACCOUNT: '100000/100000',
    CC_RATE_AUTH_FAILURES_PER_IP: '100000/100000',
    CC_RATE_PER_TOKEN: '100000/100000',
    CC_RATE_PER_IP: '100000/100000',
    CC_RATE_STATIC_PER_IP: '100000/100000',
    CC_LOG_LEVEL: 'silent',
    ...env,
  })
}

/** Keeps every message (call `services.mailer.drain()` before looking). */
export class CapturingTransport implements MailTransport {
  readonly messages: MailMessage[] = []

  async deliver (_from: string, message: MailMessage): Promise<void> {
    this.messages.push(message)
  }

  to (address: string): MailMessage[] {
    return this.messages.filter(m => m.to === address)
  }
}

export interface Reply {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: any // eslint-disable-line @typescript-eslint/no-explicit-any
  raw: string
}

export interface TestApp {
  app: ControlApp
  services: Services
  config: ControlConfig
  mail: CapturingTransport
  request (method: string, url: string, payload?: unknown, headers?: Record<string, string>): Promise<Reply>
}

export interface StartOptions {
  env?: Record<string, string>
  deps?: Partial<AppDeps>
}

/** The app over `db`, with response validation on: a handler returning the wrong shape is a 500. */
export async function startApp (t: Test, db: Db, options: StartOptions = {}): Promise<TestApp> {
  const config = testConfig(t, options.env)
  const mail = new CapturingTransport()
  const app = await createApp(config, {
    db,
    logger: pino({ level: 'silent' }),
    mailTransport: mail,
    validateResponses: true,
    ...options.deps,
  })
  await app.initialize()
  t.teardown(async () => { await app.stop() })
  const services = app.app.services
  return {
    app,
    services,
    config,
    mail,
    async request (method, url, payload, headers = {}) {
      const res = await app.inject({
        method,
        url,
        payload: typeof payload === 'string' || payload === undefined ? payload : JSON.stringify(payload),
        headers: payload !== undefined && headers['content-type'] === undefined ? { 'content-type': 'application/json', ...headers } : headers,
        remoteAddress: headers['x-test-ip'] ?? '127.0.0.1',
      })
      let body: unknown
      try { body = res.payload === '' ? undefined : JSON.parse(res.payload) } catch { body = undefined }
      return { status: res.statusCode, headers: res.headers as Reply['headers'], body, raw: res.payload }
    },
  }
}

/** Asserts the spec's error shape: exactly {error:{code,message,details}}, code/status consistent. */
export function assertError (t: Test, res: Reply, code: ErrorCode, note = ''): void {
  t.equal(res.status, ERROR_STATUS[code], `${note} status ${ERROR_STATUS[code]} (${code})`)
  t.match(res.headers['content-type'], /^application\/json/, `${note} JSON error body`)
  t.same(Object.keys(res.body ?? {}), ['error'], `${note} body has only "error"`)
  t.same(Object.keys(res.body?.error ?? {}).sort(), ['code', 'details', 'message'], `${note} error has code, message, details`)
  t.equal(res.body?.error?.code, code, `${note} code ${code}`)
  t.ok(ERROR_CODES.includes(res.body?.error?.code), `${note} code is one of the contract's`)
  t.type(res.body?.error?.message, 'string')
  t.ok(res.body?.error?.message.length > 0, `${note} message not empty`)
  t.type(res.body?.error?.details, 'object')
}

/** Extracts the `token` query parameter of the first link in a mail. */
export function tokenFromMail (message: MailMessage): string {
  const link = message.links[0]
  const token = new URL(link).searchParams.get('token')
  if (token === null) throw new Error(`no token in ${link}`)
  return token
}

export const PASSWORD = 'correct horse battery'

export function registration (email: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    name: 'Ada Lovelace',
    email,
    password: PASSWORD,
    password_confirmation: PASSWORD,
    accept_terms: true,
    accept_privacy: true,
    accept_marketing: false,
    erugo_version: '1.0.0',
    ...extra,
  }
}

/** Registers, optionally verifies, logs in; returns the login body. */
export async function signUp (h: TestApp, email: string, options: { verify?: boolean } = {}): Promise<{ access_token: string, refresh_token: string, user: { id: string } }> {
  const reg = await h.request('POST', '/v1/auth/register', registration(email))
  if (reg.status !== 201) throw new Error(`register ${email}: ${reg.status} ${reg.raw}`)
  if (options.verify === true) {
    await h.services.mailer.drain()
    const mail = h.mail.to(email).find(m => m.subject.includes('Confirm'))
    if (mail === undefined) throw new Error(`no verification mail for ${email}`)
    const v = await h.request('GET', `/v1/auth/verify-email?token=${encodeURIComponent(tokenFromMail(mail))}`)
    if (v.status !== 200) throw new Error(`verify ${email}: ${v.status} ${v.raw}`)
  }
  const login = await h.request('POST', '/v1/auth/login', { email, password: PASSWORD })
  if (login.status !== 200) throw new Error(`login ${email}: ${login.status} ${login.raw}`)
  return login.body
}

export function bearer (token: string): Record<string, string> {
  return { authorization: `Bearer ${token}` }
}

/**
 * A subtest that gets an empty Postgres schema of its own and a DATABASE_URL selecting it
 * (search_path in the connection's startup options), for starting control apps or processes as
 * replicas on one database. Without CC_TEST_DATABASE_URL it is skipped with the reason (with
 * CC_REQUIRE_INTEROP=1 it fails instead). The schema is dropped at teardown.
 */
export async function postgresReplicaTest (t: Test, name: string, body: (t: Test, database: { url: string, schema: string }) => Promise<void>): Promise<void> {
  const baseUrl = await postgresOrSkip(t, name, 'control replicas need a real Postgres server')
  if (baseUrl === undefined) return
  await t.test(name, async t => {
    const schema = freshSchemaName()
    const admin = knexFactory({ client: 'pg', connection: baseUrl, pool: { min: 0, max: 1 } })
    try {
      await admin.raw(`create schema "${schema}"`)
    } finally {
      await admin.destroy()
    }
    t.teardown(async () => {
      const dropper = knexFactory({ client: 'pg', connection: baseUrl, pool: { min: 0, max: 1 } })
      try {
        await dropper.raw(`drop schema if exists "${schema}" cascade`)
      } finally {
        await dropper.destroy()
      }
    })
    const url = new URL(baseUrl)
    url.searchParams.set('options', `-c search_path=${schema}`)
    await body(t, { url: url.toString(), schema })
  })
}
