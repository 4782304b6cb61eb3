// The control API on real sockets over IPv6: CC_API_HOST=[::1], the dual-stack default `::` (IPv4
// and IPv6 clients), and the fallback to 0.0.0.0 on a host without IPv6.
import t from 'tap'
import { Writable } from 'node:stream'
import pino from 'pino'
import { createApp } from '../../control/app.ts'
import { apiListenHost, listeningUrl } from '../../control/listen-host.ts'
import { openTestDatabase, registration, testConfig } from './harness.ts'

const db = await openTestDatabase(t, 'pglite')

function capture (): { logger: pino.Logger, lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = []
  const sink = new Writable({ write (chunk: Buffer, _enc, cb) { for (const l of chunk.toString().split('\n')) if (l !== '') lines.push(JSON.parse(l) as Record<string, unknown>); cb() } })
  return { logger: pino({ level: 'info' }, sink), lines }
}

async function listening (t: Parameters<typeof testConfig>[0], env: Record<string, string>): Promise<Awaited<ReturnType<typeof createApp>>> {
  const app = await createApp(testConfig(t, { CC_API_PORT: '0', ...env }), { db, logger: pino({ level: 'silent' }) })
  await app.start()
  t.teardown(async () => { await app.stop({ timeout: 0 }) })
  return app
}

t.test('CC_API_HOST=[::1]: the API answers over IPv6, its URL bracketed, its per-address limit applied to the IPv6 client', async t => {
  const app = await listening(t, { CC_API_HOST: '[::1]', CC_RATE_AUTH_PER_IP: '1/1' })
  const base = listeningUrl(app.info)
  t.match(base, /^http:\/\/\[::1\]:\d+$/, `its URL is written with brackets (${base})`)
  const health = await fetch(`${base}/health`)
  t.equal(health.status, 200, '/health over [::1]')
  await health.arrayBuffer()
  const register = await fetch(`${base}/v1/auth/register`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(registration('six@example.com')) })
  t.equal(register.status, 201, 'a sign-up over IPv6')
  await register.arrayBuffer()
  const again = await fetch(`${base}/v1/auth/register`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(registration('six2@example.com')) })
  t.equal(again.status, 429, 'the per-address limit holds for an IPv6 client')
  await again.arrayBuffer()
})

t.test('the default host :: serves IPv4 and IPv6 clients on one port', async t => {
  const app = await listening(t, {})
  t.equal(app.info.address, '::', 'bound to the dual-stack wildcard')
  for (const host of ['127.0.0.1', '[::1]']) {
    const res = await fetch(`http://${host}:${app.info.port}/health`)
    t.equal(res.status, 200, `/health over ${host}`)
    await res.arrayBuffer()
  }
})

t.test('a host without IPv6: the API listens on 0.0.0.0 and says so', async t => {
  const { logger, lines } = capture()
  const noIpv6 = async (host: string): Promise<void> => {
    if (host !== '::') return
    const err = new Error('socket: Address family not supported by protocol') as NodeJS.ErrnoException
    err.code = 'EAFNOSUPPORT'
    throw err
  }
  t.equal(await apiListenHost('::', logger, noIpv6), '0.0.0.0')
  t.equal(lines.length, 1)
  t.match(lines[0], { level: 40, listener: 'api', msg: /no IPv6 on this host: listening on 0\.0\.0\.0/ })
  t.equal(await apiListenHost('::1', logger, noIpv6), '::1', 'an explicit address is never rewritten')
  t.equal(await apiListenHost('::', logger), '::', 'this host has IPv6: the real check keeps ::')
  t.equal(lines.length, 1, 'no more warnings')
})
