// Mail over real SMTP (a local smtp-server): the verification and reset links work once and only once.
import t from 'tap'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import pino from 'pino'
import { createApp } from '../../../control/app.ts'
import { Mailer, OutboxTransport } from '../../../control/services/mail.ts'
import { forEachDatabase, PASSWORD, registration, testConfig } from '../harness.ts'
import { decodeQuotedPrintable, startSmtp, type CapturedMail } from '../../helpers/smtp.ts'

function linkIn (message: CapturedMail, pattern: RegExp): URL {
  const body = decodeQuotedPrintable(message.raw)
  const match = pattern.exec(body)
  if (match === null) throw new Error(`no link matching ${pattern} in:\n${body}`)
  return new URL(match[0])
}

await forEachDatabase(t, async (t, db) => {
  const smtp = await startSmtp(t)
  const config = testConfig(t, { CC_SMTP_URL: `smtp://127.0.0.1:${smtp.port}`, CC_MAIL_FROM: 'Erugo Cloud <no-reply@example.test>' })
  const app = await createApp(config, { db, logger: pino({ level: 'silent' }) })
  await app.initialize()
  t.teardown(async () => { await app.stop() })
  const request = async (method: string, url: string, payload?: object): Promise<{ status: number, body: any }> => { // eslint-disable-line @typescript-eslint/no-explicit-any
    const res = await app.inject({ method, url, payload })
    return { status: res.statusCode, body: JSON.parse(res.payload) }
  }

  t.test('verification link from the mail works once', async t => {
    t.equal((await request('POST', '/v1/auth/register', registration('smtp-user@example.com'))).status, 201)
    await app.app.services.mailer.drain()
    const mail = smtp.messages.find(m => m.to.includes('smtp-user@example.com'))!
    t.ok(mail, 'delivered over SMTP')
    t.equal(mail.from, 'no-reply@example.test')
    t.match(mail.raw, /Subject: Confirm your Erugo Cloud email address/)
    // The mail links to the dashboard's page, which posts the token to the API.
    const link = linkIn(mail, /https:\/\/api\.example\.test\/verify-email\?token=[\w%-]+/)
    const token = link.searchParams.get('token')!
    const first = await app.inject({ method: 'POST', url: '/v1/auth/verify-email', payload: { token } })
    t.equal(first.statusCode, 200)
    t.equal(JSON.parse(first.payload).account_status, 'active')
    const second = await app.inject({ method: 'POST', url: '/v1/auth/verify-email', payload: { token } })
    t.equal(second.statusCode, 410, 'second use refused')
    t.equal(JSON.parse(second.payload).error.code, 'LINK_ALREADY_USED')
  })

  t.test('reset link from the mail works once', async t => {
    const before = smtp.messages.length
    t.equal((await request('POST', '/v1/auth/forgot-password', { email: 'smtp-user@example.com' })).status, 200)
    await app.app.services.mailer.drain()
    const mail = smtp.messages.slice(before).find(m => /Subject: Reset your Erugo Cloud password/.test(m.raw))!
    t.ok(mail, 'reset mail delivered')
    const link = linkIn(mail, /https:\/\/dashboard\.example\.test\/reset-password\?token=[\w%-]+/)
    const token = link.searchParams.get('token')!
    const body = { token, password: 'new passphrase 42', password_confirmation: 'new passphrase 42' }
    t.equal((await request('POST', '/v1/auth/reset-password', body)).status, 200)
    const again = await request('POST', '/v1/auth/reset-password', { ...body, password: 'other passphrase', password_confirmation: 'other passphrase' })
    t.equal(again.status, 422, 'second use refused')
    t.equal((await request('POST', '/v1/auth/login', { email: 'smtp-user@example.com', password: PASSWORD })).status, 401, 'old password gone')
    t.equal((await request('POST', '/v1/auth/login', { email: 'smtp-user@example.com', password: 'new passphrase 42' })).status, 200, 'the first reset holds')
  })

  t.test('mail failure does not fail the request', async t => {
    const dead = testConfig(t, { CC_SMTP_URL: 'smtp://127.0.0.1:1' })
    const app2 = await createApp(dead, { db, logger: pino({ level: 'silent' }) })
    await app2.initialize()
    t.teardown(async () => { await app2.stop() })
    const res = await app2.inject({ method: 'POST', url: '/v1/auth/register', payload: registration('nomail@example.com') })
    t.equal(res.statusCode, 201)
    await app2.app.services.mailer.drain()
    const resend = await app2.inject({ method: 'POST', url: '/v1/auth/resend-verification', payload: { email: 'nomail@example.com' } })
    t.equal(resend.statusCode, 200, 'and the user can ask again later')
  })
})

t.test('outbox transport: one file per message, link logged', async t => {
  const config = testConfig(t)
  const lines: string[] = []
  const logger = pino({ level: 'info' }, { write: (line: string) => { lines.push(line) } })
  const mailer = new Mailer('Erugo <no-reply@localhost>', new OutboxTransport(join(config.dataDir, 'outbox'), logger), logger)
  mailer.send({ to: 'a@example.com', subject: 'Hello', text: 'Visit https://x.test/a?token=abc', links: ['https://x.test/a?token=abc'] })
  mailer.send({ to: 'b@example.com', subject: 'Hello again', text: 'b', links: [] })
  await mailer.drain()
  const files = readdirSync(join(config.dataDir, 'outbox'))
  t.equal(files.length, 2)
  const contents = files.map(f => readFileSync(join(config.dataDir, 'outbox', f), 'utf8')).join('\n')
  t.match(contents, /To: a@example.com\nSubject: Hello\n\nVisit https:\/\/x\.test\/a\?token=abc/)
  t.ok(lines.some(l => l.includes('https://x.test/a?token=abc')), 'link in the log')
})
