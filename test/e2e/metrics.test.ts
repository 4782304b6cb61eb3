/**
 * Debian's Prometheus server scrapes `cloud-connect start` (CC_METRICS_LISTEN) every second in the
 * lab while traffic flows, and the test reads the results back through Prometheus's HTTP API:
 *
 *   ns gw:    cloud-connect start (API :8080, WireGuard :51820, HTTPS :8443, metrics :9091), prometheus :9090
 *   ns peera: container A (wireguard-go, registered), and wireguard-go with a key nobody registered
 *   ns peerb: container B (wireguard-go, registered)
 *
 * Proves: the API latency histogram with route templates as labels; active tunnels = the connected
 * containers (2, then 1 once B's instance is deleted, whose tunnel lifetime is then observed); the
 * unknown key's handshakes and a refused registration counted as failed attempts; sign-ups,
 * verified and paying accounts, conversion and churn equal to what the signed Stripe events imply.
 * Needs root, wireguard-go and prometheus: skipped with the reason otherwise, failed under
 * CC_REQUIRE_INTEROP=1.
 */
import t, { type Test } from 'tap'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Lab, REPO_ROOT, requireLab, run, waitUntil } from '../helpers/lab.ts'
import { ApiClient, PASSWORD, connectPeer, createInstance, listenEnv, serviceEnv, signUp, startAllInOne, twoContainerLab } from '../helpers/lab/e2e.ts'
import { startPrometheus, type Prometheus } from '../helpers/lab/prometheus.ts'
import { StripeFake } from '../helpers/stripe-fake.ts'

type Json = Record<string, any> // eslint-disable-line @typescript-eslint/no-explicit-any

const API_PORT = 8080
const WG_PORT = 51820
const METRICS = '127.0.0.1:9091'
const DAY = 86400
const now = (): number => Math.floor(Date.now() / 1000)

/** Polls an instant query until `ok` holds for its value; returns the value. */
async function settle (prom: Prometheus, expr: string, ok: (v: number | undefined) => boolean, timeoutMs = 60_000): Promise<number | undefined> {
  let last: number | undefined
  try {
    await waitUntil(`${expr} to settle`, async () => { last = await prom.scalar(expr); return ok(last) }, timeoutMs, 500)
  } catch (err) {
    throw new Error(`${(err as Error).message}; last value ${String(last)}`)
  }
  return last
}

t.test('cloud-connect start scraped by Prometheus: API latency, tunnels, failed attempts, conversion and churn', async (t: Test) => {
  if (!requireLab(t, ['prometheus'])) return
  const lab = await Lab.create(t)
  const { gwNs, nsA, nsB, publicIp } = await twoContainerLab(lab)
  const dataDir = mkdtempSync(join(tmpdir(), 'cc-e2e-metrics-'))
  t.teardown(() => { rmSync(dataDir, { recursive: true, force: true }) })
  // Only signed webhook events reach control here: the fake's API is never called (no checkout).
  const stripe = await StripeFake.start(t)

  const svc = await startAllInOne(lab, gwNs, serviceEnv({
    CC_DATA_DIR: dataDir,
    CC_BASE_DOMAIN: 'cc.test',
    ...listenEnv(publicIp, { api: API_PORT, wg: WG_PORT, https: 8443 }),
    CC_HTTP_PORT: '8000',
    CC_METRICS_LISTEN: METRICS,
    ...stripe.env(),
  }))
  t.match(svc.process.output(), new RegExp(`^ {2}Metrics +http://${METRICS.replace(/\./g, '\\.')}/metrics `, 'm'), 'the banner names the metrics URL')
  const prom = await startPrometheus(lab, gwNs, { job: 'cloud-connect', targets: [METRICS] })
  await settle(prom, 'up{job="cloud-connect"}', v => v === 1, 30_000)

  // Five sign-ups, four verified (A..D); E never confirms.
  const api = new ApiClient(lab, gwNs, svc.api)
  const users: Array<{ token: string, id: string }> = []
  for (const name of ['a', 'b', 'c', 'd']) {
    const token = await signUp(api, svc.outbox, `${name}@example.com`)
    users.push({ token, id: (await api.ok('GET', '/v1/user', 200, { token })).id })
  }
  await api.ok('POST', '/v1/auth/register', 201, {
    body: { name: 'Unverified', email: 'e@example.com', password: PASSWORD, password_confirmation: PASSWORD, accept_terms: true, accept_privacy: true, accept_marketing: false, erugo_version: '1.0.0' },
  })

  // Stripe's side, as signed webhook events: A pro and B business for 40 days, C pro for 40 days
  // until it ended 10 days ago, D pro for 5 days.
  const deliver = async (event: Json): Promise<void> => {
    const payload = JSON.stringify(event)
    const r = await lab.curl(gwNs, ['-sS', '--max-time', '20', '-o', '/dev/null', '-w', '%{http_code}', '-H', 'content-type: application/json', '-H', `stripe-signature: ${stripe.sign(payload, { timestamp: now() })}`,
      '--data-binary', '@-', `${svc.api}/v1/billing/webhook`], { input: payload })
    t.equal(r.stdout, '200', `${String(event.type)} accepted`)
  }
  const subscribe = async (user: { id: string }, customer: string, plan: 'pro' | 'business', daysAgo: number): Promise<string> => {
    const at = now() - daysAgo * DAY
    const sub = stripe.createSubscription({ customer, price: stripe.prices[plan], at, metadata: { user_id: user.id } })
    await deliver(stripe.event('customer.subscription.created', sub, at))
    return sub.id as string
  }
  await subscribe(users[0], 'cus_a', 'pro', 40)
  await subscribe(users[1], 'cus_b', 'business', 40)
  const cSub = await subscribe(users[2], 'cus_c', 'pro', 40)
  await subscribe(users[3], 'cus_d', 'pro', 5)
  const ended = now() - 10 * DAY
  await deliver(stripe.event('customer.subscription.deleted', stripe.updateSubscription(cSub, { status: 'canceled', canceledAt: ended, endedAt: ended }), ended))

  // Two containers connect through the tunnel; a third WireGuard peer uses a key nobody registered.
  const instA = await createInstance(api, users[0].token, 'metrics-a')
  const instB = await createInstance(api, users[1].token, 'metrics-b')
  await connectPeer(lab, new ApiClient(lab, nsA, `http://${publicIp}:${API_PORT}`), instA.token)
  await connectPeer(lab, new ApiClient(lab, nsB, `http://${publicIp}:${API_PORT}`), instB.token)
  await lab.startWireguardGo(nsA, {
    address: '10.99.0.2/32',
    listenPort: 51821,
    peers: [{ publicKey: svc.publicKey, endpoint: `${publicIp}:${WG_PORT}`, allowedIPs: ['10.99.0.1/32'], persistentKeepalive: 1 }],
  })
  t.equal((await api.call('POST', '/v1/tunnel/register', { body: { public_key: svc.publicKey } })).status, 401, 'a registration without a token')

  t.equal(await settle(prom, 'cc_tunnels_active{job="cloud-connect"}', v => v === 2), 2, 'active tunnels = the two connected containers')
  t.ok(await settle(prom, 'cc_tunnel_failed_attempts_total{reason="unknown_key"}', v => v !== undefined && v >= 1), 'the unknown key\'s handshakes counted as failed')
  t.equal(await settle(prom, 'cc_tunnel_failed_attempts_total{reason="register_refused_401"}', v => v === 1), 1, 'the refused registration counted')

  // API latency: a histogram whose series are route templates, never raw paths.
  const routes = (await prom.query('count by (route) (cc_api_request_duration_seconds_bucket{job="cloud-connect"})')).map(s => s.metric.route)
  for (const route of ['/v1/auth/register', '/v1/auth/login', '/v1/user', '/v1/instances', '/v1/tunnel/register', '/v1/billing/webhook']) {
    t.ok(routes.includes(route), `latency histogram for ${route}`)
  }
  t.notOk(routes.some(r => /inst_|token=/.test(r)), `no raw paths among ${JSON.stringify(routes)}`)
  // Over the counts since start, not a rate: a rate over a window that no request fell in (a slow
  // run spends more than a minute before this point) is NaN.
  const median = await settle(prom, 'histogram_quantile(0.5, sum by (le) (cc_api_request_duration_seconds_bucket{job="cloud-connect"}))', v => v !== undefined && Number.isFinite(v))
  t.ok(median! > 0 && median! < 10, `median API latency ${String(median)} s`)
  t.equal(await prom.scalar('sum(cc_api_requests_total{job="cloud-connect",status="401"})'), 1, 'responses by status')

  // Business gauges (the query is cached for up to 15 s: wait for the values the events imply).
  t.equal(await settle(prom, 'cc_business_signups', v => v === 5), 5, 'five sign-ups')
  t.equal(await settle(prom, 'cc_business_verified_accounts', v => v === 4), 4, 'four verified')
  t.equal(await settle(prom, 'cc_business_paying_accounts{plan="pro"}', v => v === 2), 2, 'A and D on pro')
  t.equal(await settle(prom, 'cc_business_paying_accounts{plan="business"}', v => v === 1), 1, 'B on business')
  t.equal(await settle(prom, 'cc_business_conversion_ratio', v => v === 0.75), 0.75, 'conversion: 3 paying / 4 verified')
  t.equal(await settle(prom, 'cc_business_churn_ratio', v => v !== undefined && Math.abs(v - 1 / 3) < 1e-9), 1 / 3, 'churn: 1 cancellation / 3 paying 30 days ago')

  // B's instance deleted: its peer is removed from the gateway and its tunnel's lifetime observed.
  t.equal((await api.call('DELETE', `/v1/instances/${instB.id}`, { token: users[1].token })).status, 204, 'B\'s instance deleted')
  t.equal(await settle(prom, 'cc_tunnels_active{job="cloud-connect"}', v => v === 1), 1, 'one container left')
  t.equal(await settle(prom, 'cc_tunnel_connection_duration_seconds_count{job="cloud-connect"}', v => v === 1), 1, 'one tunnel lifetime observed')
  t.equal(await settle(prom, 'sum(cc_api_request_duration_seconds_count{route="/v1/instances/{instance_id}",method="DELETE",status_class="2xx"})', v => v === 1), 1, 'the DELETE under its route template')
  t.ok(await prom.scalar('nodejs_eventloop_lag_seconds{job="cloud-connect"}') !== undefined, 'process metrics scraped')
  t.ok(svc.process.running, 'the service is still running')

  // The files in docker/: the scrape config is valid, and every dashboard query runs and finds its metrics here.
  const check = await run('promtool', ['check', 'config', join(REPO_ROOT, 'docker/prometheus.yml')], { timeoutMs: 30_000 })
  t.equal(check.code, 0, `promtool check config docker/prometheus.yml: ${check.stdout}${check.stderr}`)
  const dashboard = JSON.parse(readFileSync(join(REPO_ROOT, 'docker/grafana/cloud-connect.json'), 'utf8')) as { panels: Array<{ title: string, targets?: Array<{ expr: string }> }> }
  for (const panel of dashboard.panels) {
    for (const target of panel.targets ?? []) {
      const expr = target.expr.replaceAll('$__rate_interval', '1m').replaceAll('$job', '.*')
      const names = [...new Set(expr.match(/\b(?:cc|nodejs|process)_[a-z0-9_]+/g) ?? [])]
      for (const name of names) t.ok((await prom.query(`count(${name})`)).length > 0, `${panel.title}: ${name} scraped`)
      await prom.query(expr) // throws unless Prometheus accepts it
    }
  }
})
