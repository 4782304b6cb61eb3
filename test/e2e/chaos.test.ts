/**
 * Fault injection on loopback, without root: `cloud-connect start` (control + gateway in one
 * process), a userspace agent in front of a local origin (keep-alive downloads, HTTP/1.0-style
 * downloads ended by FIN as python's http.server sends them, upload hashing, WebSocket echo), and
 * clients on the edge's HTTPS port.
 *
 *   test process: origin :N <- agent (userspace WireGuard) <- UDP -> cloud-connect start
 *                 HTTP/1.1, HTTP/2 and WebSocket clients -> edge :HTTPS ---^
 *
 * For CC_CHAOS_SECONDS (default 60), 8 workers run requests chosen by a seeded generator (the seed
 * is printed; CC_CHAOS_SEED replays the choices, not the timing): HTTP/1.1 or HTTP/2, a download
 * (20-100 MB, keep-alive or close-delimited), an upload or a WebSocket echo, given up before the
 * response headers, mid-body, after stalling the edge under backpressure, mid-upload, or read to
 * the end (slowly, at times) and checked byte-exact; and whole HTTP/2 connections with several
 * streams torn down. Meanwhile the peer churns: the agent is killed and replaced by one with a new
 * key (the gateway swaps the peer under requests in flight), or the token is regenerated (the
 * gateway drops the peer) and an agent started with the new one.
 *
 * Proves: no connection, stream or peer ends the process (checked after every churn step and at
 * the end; on exit the failure shows the service's last output); once the tunnel is back every
 * request kind succeeds byte-exact (20 of each, on new connections); the gateway's TCP connections all close again (the
 * tcp_connections gauge of /status back to its idle baseline of 0) and RSS stays bounded.
 */
import t, { type Test } from 'tap'
import https from 'node:https'
import { readFileSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { createInstance, delay, freePort, json, startAgent, startService, tempDir, waitUntil, type Proc, type Service } from '../agent/service.ts'
import { startOrigin, type EdgeTarget } from '../agent/origin.ts'
import {
  Prng, SessionPool, connectH2, download, expected, smallGet, upload, websocket,
  type Cancel, type Clients, type DownloadPath, type Protocol, type Result,
} from './chaos-clients.ts'

const MB = 1 << 20
const CHAOS_SECONDS = Number(process.env.CC_CHAOS_SECONDS ?? 60)
const SEED = process.env.CC_CHAOS_SEED !== undefined ? Number(process.env.CC_CHAOS_SEED) : Date.now() % 2 ** 31
const WORKERS = 8
/** Downloads given up part-way; those read to the end are smaller (the tunnel carries some 20-50 MB/s in all on a busy machine). */
const DOWNLOAD_SIZES = [20 * MB, 32 * MB, 48 * MB, 100 * MB]
const COMPLETE_SIZES = [4 * MB, 8 * MB, 20 * MB, 20 * MB, 48 * MB]
const UPLOAD_SIZES = [2 * MB, 5 * MB, 8 * MB]
const DOWNLOAD_PATHS: readonly DownloadPath[] = ['/download', '/download-close']
const PROTOCOLS: readonly Protocol[] = ['h1', 'h2']
/** Pause between churn steps (after the new agent is up), ms. */
const CHURN_PAUSE: [number, number] = [8_000, 15_000]
/** After the chaos: this many of each request kind, all of which must succeed. */
const VERIFY_EACH = 20
const VERIFY_DOWNLOAD = 4 * MB
const VERIFY_UPLOAD = 2 * MB
/** During the chaos a request without a byte for this long is given up (`stalled`). */
const CHAOS_STALL_MS = 6_000
const TUNNEL_UP = /"msg":"tunnel up: the gateway answers"/

function rssKiB (pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  if (m === null) throw new Error(`no VmRSS for ${pid}`)
  return Number(m[1])
}

async function gatewayStatus (metrics: string): Promise<{ counters: Record<string, Record<string, number>>, peers: unknown[] }> {
  const res = await fetch(`http://${metrics}/status`)
  if (res.status !== 200) throw new Error(`/status: ${res.status}`)
  return await res.json() as { counters: Record<string, Record<string, number>>, peers: unknown[] }
}

/** The gateway's netstack connections in any state (tcp_connections is a gauge by state). */
async function openConnections (metrics: string): Promise<{ total: number, byState: Record<string, number> }> {
  const byState = Object.fromEntries(Object.entries((await gatewayStatus(metrics)).counters.tcp_connections ?? {}).filter(([, n]) => n !== 0))
  return { total: Object.values(byState).reduce((a, b) => a + b, 0), byState }
}

function tail (proc: Proc, lines = 100): string {
  return proc.output.split('\n').slice(-lines - 1).join('\n')
}

/** Asserts the service runs; if not, fails with its last output and returns false. */
function serviceRuns (t: Test, service: Service, when: string): boolean {
  if (service.proc.running) {
    t.pass(`the service is running ${when}`)
    return true
  }
  t.fail(`the service exited (${String(service.proc.child.exitCode ?? service.proc.child.signalCode)}) ${when}`, { serviceOutput: tail(service.proc) })
  return false
}

class Tally {
  readonly requests = new Map<string, { complete: number, cancelled: number, error: number }>()
  readonly cancels = new Map<string, number>()
  readonly errors = new Map<string, number>()

  add (kind: string, cancel: Cancel['at'] | 'connection-abort', r: Result): void {
    const row = this.requests.get(kind) ?? { complete: 0, cancelled: 0, error: 0 }
    row[r.outcome]++
    this.requests.set(kind, row)
    if (r.outcome === 'cancelled') this.cancels.set(cancel, (this.cancels.get(cancel) ?? 0) + 1)
    if (r.outcome === 'error') this.errors.set(`${kind}: ${r.error ?? '?'}`, (this.errors.get(`${kind}: ${r.error ?? '?'}`) ?? 0) + 1)
  }

  count (what: 'complete' | 'cancelled' | 'error'): number {
    let n = 0
    for (const row of this.requests.values()) n += row[what]
    return n
  }

  report (): string {
    const rows = [...this.requests].sort().map(([k, v]) => `  ${k.padEnd(22)} complete ${v.complete}, cancelled ${v.cancelled}, error ${v.error}`)
    const cancels = [...this.cancels].sort().map(([k, v]) => `${k} ${v}`).join(', ')
    const errors = [...this.errors].sort((a, b) => b[1] - a[1]).map(([k, v]) => `  ${String(v).padStart(5)}  ${k}`)
    return [...rows, `  cancels: ${cancels}`, '  errors by kind:', ...errors].join('\n')
  }
}

/** A download's give-up point; a third of the mid-body and backpressure ones within the last 256 KiB. */
function downloadPlan (prng: Prng): { bytes: number, cancel: Cancel } {
  const at = prng.pick(['none', 'slow-reader', 'slow-reader', 'before-headers', 'mid-body', 'backpressure', 'backpressure'] as const)
  if (at === 'none' || at === 'slow-reader') return { bytes: prng.pick(COMPLETE_SIZES), cancel: { at } }
  const bytes = prng.pick(DOWNLOAD_SIZES)
  const after = (): number => prng.chance(1 / 3) ? bytes - prng.int(1, 256 * 1024) : prng.int(0, bytes - 1)
  switch (at) {
    case 'before-headers': return { bytes, cancel: { at } }
    case 'mid-body': return { bytes, cancel: { at, after: after() } }
    case 'backpressure': return { bytes, cancel: { at, after: after(), pauseMs: prng.int(200, 3_000) } }
  }
}

/** One worker iteration: a request chosen by `prng`, or a whole HTTP/2 connection torn down. */
async function chaosStep (clients: Clients, prng: Prng, tally: Tally, n: number): Promise<void> {
  const roll = prng.next()
  if (roll < 0.08) {
    // Several streams on a connection of their own, then the TLS socket destroyed under them.
    const session = connectH2(clients.edge)
    const streams = Array.from({ length: prng.int(2, 6) }, () => {
      const path = prng.pick(DOWNLOAD_PATHS)
      return download(clients, 'h2', path, prng.pick(DOWNLOAD_SIZES), `c${prng.int(0, 3)}`, prng.chance(0.5) ? { at: 'none' } : { at: 'slow-reader' }, prng, session)
        .then(r => { tally.add(`h2 ${path.slice(1)}`, 'connection-abort', r.outcome === 'error' ? { ...r, outcome: 'cancelled' } : r) })
    })
    await delay(prng.int(50, 2_000))
    session.tlsSocket.destroy()
    await Promise.all(streams)
    return
  }
  const protocol = prng.pick(PROTOCOLS)
  if (roll < 0.65) {
    const path = prng.pick(DOWNLOAD_PATHS)
    const { bytes, cancel } = downloadPlan(prng)
    tally.add(`${protocol} ${path.slice(1)}`, cancel.at, await download(clients, protocol, path, bytes, `c${prng.int(0, 3)}`, cancel, prng))
  } else if (roll < 0.85) {
    const bytes = prng.pick(UPLOAD_SIZES)
    const cancel: Cancel = prng.pick([{ at: 'none' }, { at: 'before-headers' }, { at: 'mid-upload', after: prng.int(0, bytes - 1) }] as const)
    tally.add(`${protocol} upload`, cancel.at, await upload(clients, protocol, bytes, `u${prng.int(0, 3)}`, cancel))
  } else if (roll < 0.95) {
    const messages = prng.int(1, 40)
    const cancel: Cancel = prng.pick([{ at: 'none' }, { at: 'before-headers' }, { at: 'mid-body', after: prng.int(0, messages) }, { at: 'backpressure', after: 0, pauseMs: prng.int(200, 3_000) }] as const)
    tally.add('websocket', cancel.at, await websocket(clients, messages, cancel, prng))
  } else {
    tally.add(`${protocol} small`, 'none', await smallGet(clients, protocol, `chaos-${n}`))
  }
}

t.test('chaos: cancelled requests, torn connections and peer churn never end the process; afterwards all is served and released', async t => {
  t.comment(`chaos seed ${SEED}, ${CHAOS_SECONDS} s (CC_CHAOS_SEED / CC_CHAOS_SECONDS to change)`)
  const started = Date.now()
  const elapsed = (): string => `${((Date.now() - started) / 1000).toFixed(0)} s`
  const dir = tempDir(t, 'cc-chaos-')
  const metrics = `127.0.0.1:${await freePort()}`
  const service = await startService(t, join(dir, 'service'), {}, { CC_METRICS_LISTEN: metrics })
  const pid = service.proc.child.pid!
  let testEnded = false
  t.teardown(() => { testEnded = true })
  void service.proc.exited.then(code => { if (!testEnded) t.comment(`the service exited (${String(code ?? service.proc.child.signalCode)}) at ${elapsed()}`) })
  let peakKiB = rssKiB(pid)
  t.comment(`RSS at start ${(peakKiB / 1024).toFixed(0)} MB`)
  const sampler = setInterval(() => { try { peakKiB = Math.max(peakKiB, rssKiB(pid)) } catch { /* exited: asserted elsewhere */ } }, 250)
  t.teardown(() => { clearInterval(sampler) })

  const instance = await createInstance(service, 'chaos')
  const origin = await startOrigin(t)
  const target = `http://127.0.0.1:${origin.port}`
  let token = instance.token
  let agent = startAgent(t, { api: service.api, token, dir, target })
  await agent.waitFor(TUNNEL_UP, 90_000)

  const edge: EdgeTarget = { port: service.httpsPort, hostname: instance.hostname, ca: service.ca }
  // The checks before and after open a connection per HTTP/1.1 request: a request sent on a
  // kept-alive connection the moment the previous response's last byte arrives is at times
  // refused (HPE_PAUSED, the connection reset), which is not what this test is about.
  const agentPool = new https.Agent({ keepAlive: false, maxSockets: 32 })
  const sessions = new SessionPool(edge, 2)
  const chaosAgent = new https.Agent({ keepAlive: true, maxSockets: 32 })
  t.teardown(() => { sessions.close(); agentPool.destroy(); chaosAgent.destroy() })
  const clients: Clients = { edge, agent: agentPool, sessions, stallMs: 30_000 }
  await waitUntil('HTTPS through the edge', async () => (await smallGet(clients, 'h1', 'up')).outcome === 'complete' || undefined, 60_000, 500)

  // Every expected hash before the clock starts (hashing 100 MB costs the clients time).
  for (let s = 0; s < 4; s++) {
    for (const bytes of new Set([...DOWNLOAD_SIZES, ...COMPLETE_SIZES])) await expected(`c${s}`, bytes)
    for (const bytes of UPLOAD_SIZES) await expected(`u${s}`, bytes)
  }

  // Baseline: each kind once in full, then idle until the origin's keep-alive timeout (5 s) has
  // closed the pooled upstream connections.
  const warm = new Tally()
  for (const protocol of PROTOCOLS) {
    for (const path of DOWNLOAD_PATHS) warm.add(`${protocol} ${path.slice(1)}`, 'none', await download(clients, protocol, path, 20 * MB, 'c0', { at: 'none' }, new Prng(1)))
    warm.add(`${protocol} upload`, 'none', await upload(clients, protocol, 8 * MB, 'u0', { at: 'none' }))
    warm.add(`${protocol} small`, 'none', await smallGet(clients, protocol, 'warm'))
  }
  warm.add('websocket', 'none', await websocket(clients, 20, { at: 'none' }, new Prng(2)))
  t.comment(`warm-up (done at ${elapsed()}):\n${warm.report()}`)
  if (!serviceRuns(t, service, 'after the warm-up')) return
  t.equal(warm.count('complete'), 9, 'warm-up: every kind once, byte-exact')
  sessions.close()
  agentPool.destroy()
  const idle = await waitUntil('no gateway TCP connections after the warm-up', async () => {
    const open = await openConnections(metrics)
    return open.total === 0 ? open : undefined
  }, 30_000, 250)
  t.equal(idle.total, 0, `baseline: the gateway holds no TCP connection once idle (at ${elapsed()})`)
  const baselineKiB = rssKiB(pid)
  t.comment(`RSS baseline ${(baselineKiB / 1024).toFixed(0)} MB`)

  // The chaos.
  const tally = new Tally()
  const churn = { replaced: 0, removed: 0, downMs: 0 }
  const deadline = Date.now() + CHAOS_SECONDS * 1000
  // Requests to a peer that is gone stall (nothing tells the edge): give up on them sooner.
  const chaosClients: Clients = { ...clients, agent: chaosAgent, stallMs: CHAOS_STALL_MS }
  t.comment(`chaos from ${elapsed()}`)
  const running = (): boolean => Date.now() < deadline && service.proc.running
  const workers = Array.from({ length: WORKERS }, async (_, w) => {
    const prng = new Prng(SEED + 7919 * (w + 1))
    for (let n = 0; running(); n++) await chaosStep(chaosClients, prng, tally, n)
  })
  const churner = (async () => {
    const prng = new Prng(SEED)
    while (running()) {
      await delay(prng.int(...CHURN_PAUSE))
      if (!running()) break
      const old = agent
      if (prng.chance(0.5)) {
        // A new key: the gateway replaces the peer while requests to the old one are in flight.
        old.child.kill('SIGKILL')
        await old.exited
        rmSync(join(dir, 'agent.json'), { force: true })
        churn.replaced++
      } else {
        // The owner regenerates the token: the gateway drops the peer; the agent comes back on the new token.
        const r = await json(`${service.api}/instances/${instance.id}/regenerate-token`, 'POST', undefined, instance.access)
        if (r.status !== 200) throw new Error(`regenerate-token: ${r.status} ${JSON.stringify(r.body)}`)
        token = r.body.instance_token as string
        await delay(prng.int(0, 1_000))
        await old.stop('SIGKILL')
        churn.removed++
      }
      if (!serviceRuns(t, service, `after churn step ${churn.replaced + churn.removed}`)) break
      const churnedAt = Date.now()
      agent = startAgent(t, { api: service.api, token, dir, target })
      await agent.waitFor(TUNNEL_UP, 60_000)
      churn.downMs += Date.now() - churnedAt
    }
  })()
  await Promise.all([...workers, churner])
  t.comment(`chaos (done at ${elapsed()}): ${tally.count('complete')} complete, ${tally.count('cancelled')} cancelled, ${tally.count('error')} errors; churn: ${churn.replaced} peers replaced, ${churn.removed} removed, new agents up after ${(churn.downMs / Math.max(1, churn.replaced + churn.removed) / 1000).toFixed(1)} s on average\n${tally.report()}`)
  if (!serviceRuns(t, service, 'after the chaos')) return
  t.ok(churn.replaced + churn.removed >= Math.floor(CHAOS_SECONDS / 20), `the peer churned (${churn.replaced} replaced, ${churn.removed} removed)`)
  t.ok(tally.count('complete') > 0 && tally.count('cancelled') > 0, 'requests completed and were cancelled during the chaos')
  t.notOk([...tally.errors.keys()].some(k => /corrupt|truncated/.test(k)), 'no body ever arrived complete but wrong')

  // Afterwards, everything works, on new connections (a client's own connection may have been
  // left unusable by what it did to it during the chaos).
  sessions.close()
  chaosAgent.destroy()
  await waitUntil('HTTPS through the edge after the chaos', async () => (await smallGet(clients, 'h1', 'back')).outcome === 'complete' || undefined, 60_000, 500)
  const after = new Tally()
  const jobs: Array<() => Promise<void>> = []
  for (let i = 0; i < VERIFY_EACH; i++) {
    for (const protocol of PROTOCOLS) {
      for (const path of DOWNLOAD_PATHS) jobs.push(async () => { after.add(`${protocol} ${path.slice(1)}`, 'none', await download(clients, protocol, path, VERIFY_DOWNLOAD, `v${i}`, { at: 'none' }, new Prng(i))) })
      jobs.push(async () => { after.add(`${protocol} upload`, 'none', await upload(clients, protocol, VERIFY_UPLOAD, `w${i}`, { at: 'none' })) })
      jobs.push(async () => { after.add(`${protocol} small`, 'none', await smallGet(clients, protocol, `after-${i}`)) })
    }
    jobs.push(async () => { after.add('websocket', 'none', await websocket(clients, 20, { at: 'none' }, new Prng(i))) })
  }
  const total = jobs.length
  await Promise.all(Array.from({ length: 4 }, async () => { for (let job = jobs.shift(); job !== undefined; job = jobs.shift()) await job() }))
  t.comment(`after the chaos (done at ${elapsed()}):\n${after.report()}`)
  if (!t.equal(after.count('complete'), total, `after the chaos: all ${total} requests succeed byte-exact`)) {
    t.comment(`the edge's last failed exchanges:\n${service.proc.output.split('\n').filter(l => /"error":|"aborted":true/.test(l)).slice(-20).join('\n')}`)
  }
  if (!serviceRuns(t, service, 'after the checks')) return

  // Resources: every netstack connection closes again, and RSS comes back near its baseline.
  sessions.close()
  agentPool.destroy()
  let last = { total: -1, byState: {} as Record<string, number> }
  const drained = await waitUntil('no gateway TCP connections after the chaos', async () => {
    last = await openConnections(metrics)
    return last.total === 0 || undefined
  }, 60_000, 500).catch(() => false)
  t.ok(drained, `the gateway's TCP connections all close (still open: ${JSON.stringify(last.byState)})`)
  await delay(2_000)
  const finalKiB = rssKiB(pid)
  t.comment(`RSS baseline ${(baselineKiB / 1024).toFixed(0)} MB, peak ${(peakKiB / 1024).toFixed(0)} MB, final ${(finalKiB / 1024).toFixed(0)} MB`)
  t.ok(finalKiB <= baselineKiB + 100 * 1024 && finalKiB <= 2 * baselineKiB, `RSS after the chaos within baseline + 100 MB and 2x baseline (${(finalKiB / 1024).toFixed(0)} MB vs ${(baselineKiB / 1024).toFixed(0)} MB)`)
  const counters = (await gatewayStatus(metrics)).counters
  t.comment(`edge_errors ${JSON.stringify(counters.edge_errors ?? {})}; edge_client_errors ${JSON.stringify(counters.edge_client_errors ?? {})}; tcp_connections_closed ${JSON.stringify(counters.tcp_connections_closed ?? {})}`)
  serviceRuns(t, service, 'at the end')
})
