/**
 * End to end, the fleet on real Postgres: two `cloud-connect control` replicas and three
 * `cloud-connect gateway --control URL,URL` processes, all started at the same moment on an empty
 * database, in namespaces of their own; a container with the userspace agent, one with the agent in
 * kernel mode (wg-quick, a [Peer] per gateway) and one with stock wireguard-go keep a tunnel to
 * each gateway placed for them. Then:
 *
 *   - every routed hostname answers through every gateway (directly, or relayed by a gateway that
 *     holds no session); 100 MB each way byte-exact and a WebSocket through a relayed path; the
 *     client's address reaches the origin once;
 *   - `kill -9` of an instance's primary gateway: HTTPS through the survivors answers again within
 *     10 s without the container registering again; the status stays `connected`; when the
 *     gateway returns nothing flaps;
 *   - a control replica killed while gateways long-poll it: a change made through the other
 *     replica reaches every gateway within 5 s; failed logins spread over both replicas are
 *     limited as one.
 *
 *   ns net (router, the clients' side: curl)
 *     | ctl: control x2 (API :8080/:8090, RPC :8081/:8091)
 *     | gw1, gw2, gw3: gateway (WireGuard :51820, HTTPS :8443, relay :8444)
 *     | ca: userspace agent + origin      | cb: wireguard-go (a [Peer] per gateway) + origin
 *     | cd: kernel-mode agent (wg-quick) + origin
 *
 * Without root, the lab tools or CC_TEST_DATABASE_URL the test is skipped with the reason (failed
 * under CC_REQUIRE_INTEROP=1).
 */
import t from 'tap'
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { postgresOrSkip } from '../helpers/postgres.ts'
import { Lab, requireLab, waitUntil } from '../helpers/lab.ts'
import { writeGeneratedFile } from '../helpers/lab/generator.ts'
import { createInstance, downloadSha256, httpsArgs, httpsFetch, PASSWORD, signUp, startControl, startGatewayProcess, uploadGenerated, wsEcho } from '../helpers/lab/e2e.ts'
import { agentContainer, FLEET_BASE_DOMAIN as BASE_DOMAIN, FLEET_GATEWAY_IDS as GATEWAYS, FLEET_HTTPS_PORT as HTTPS_PORT, startFleet, wireguardGoContainer, type FleetPeer } from '../helpers/lab/fleet.ts'

const FILE_BYTES = 100_000_000

t.test('two control replicas and three gateways on one Postgres: relays, failover, shared state', async t => {
  if (!requireLab(t, ['nginx', 'bash', 'sha256sum', 'wg-quick'])) return
  const DATABASE_URL = await postgresOrSkip(t, 'postgres', 'this test needs a real Postgres')
  if (DATABASE_URL === undefined) return
  const lab = await Lab.create(t)
  const fleet = await startFleet(lab, t, DATABASE_URL, { CC_RATE_LOGIN_FAILURES_PER_ADDRESS: '6/1' })
  t.pass('two control replicas and three gateways came up together on an empty database')
  const { net, controls, gateways, caBundle: bundle } = fleet
  const [api, api2] = fleet.apis
  const through = fleet.addressOf

  const files = existsSync('/dev/shm') ? join('/dev/shm', `cc-e2e-fleet-${lab.runId}`) : join(lab.dir, 'files')
  for (const who of ['a', 'b', 'd']) mkdirSync(join(files, who), { recursive: true })
  t.teardown(() => { rmSync(files, { recursive: true, force: true }) })
  const fileSha = writeGeneratedFile(join(files, 'a', 'file.bin'), FILE_BYTES, 31)
  writeFileSync(join(files, 'a', 'whoami.txt'), 'container A\n')
  writeFileSync(join(files, 'b', 'whoami.txt'), 'container B\n')
  writeFileSync(join(files, 'd', 'whoami.txt'), 'container D\n')

  const accessA = await signUp(api, fleet.outbox, 'fleet-a@example.com')
  const accessB = await signUp(api, fleet.outbox, 'fleet-b@example.com')
  const instA = await createInstance(api, accessA, 'alpha')
  const instB = await createInstance(api, accessB, 'bravo')

  // Container A: the userspace agent; B: stock wireguard-go registered through the other replica.
  const a = await agentContainer(lab, fleet, 'ca', instA.token, join(files, 'a'))
  const b = await wireguardGoContainer(lab, fleet, 'cb', instB.token, join(files, 'b'))
  t.equal(b.peers.length, 2, 'two gateways placed for B')
  t.not(b.peers[0].gateway_id, b.peers[1].gateway_id, 'primary and backup differ')
  const p0 = b.peers[0]
  t.same(b.reply.tunnel_config.peer, { public_key: p0.public_key, endpoint: p0.endpoint, allowed_ips: p0.allowed_ips, persistent_keepalive: p0.persistent_keepalive }, 'peer is the primary')
  t.not(b.peers[0].allowed_ips, b.peers[1].allowed_ips, 'each gateway has its own tunnel address')
  const agent = a.agent

  // Container D: the agent in kernel mode, one wg-quick [Peer] per placed gateway.
  const accessD = await signUp(api, fleet.outbox, 'fleet-d@example.com')
  const instD = await createInstance(api, accessD, 'delta')
  const d = await agentContainer(lab, fleet, 'cd', instD.token, join(files, 'd'), 'kernel')
  t.teardown(() => { rmSync(`/var/run/wireguard/${d.kernel!.iface}.sock`, { force: true }) })
  const kernelConfig = readFileSync(d.kernel!.configPath, 'utf8')
  const allowed = [...kernelConfig.matchAll(/^AllowedIPs = (\S+)$/gm)].map(m => m[1])
  t.equal((kernelConfig.match(/^\[Peer\]$/gm) ?? []).length, 2, 'kernel mode: a [Peer] per placed gateway')
  t.ok(allowed.length === 2 && allowed[0] !== allowed[1] && allowed.every(a => /^10\.\d+\.\d+\.\d+\/32$/.test(a)), `each limited to its gateway's own address: ${allowed.join(', ')}`)
  const handshakes = await waitUntil('both kernel-mode tunnels handshaken', async () => {
    const shown = await lab.exec(d.ns, 'wg', ['show', d.kernel!.iface, 'latest-handshakes'])
    const times = shown.stdout.trim().split('\n').map(l => Number(l.split('\t')[1]))
    return times.length === 2 && times.every(n => n > 0) ? times : undefined
  }, 30_000, 250)
  t.equal(handshakes.length, 2, 'wg shows a handshake with each gateway')

  const regA = JSON.parse(readFileSync(a.stateFile, 'utf8')) as { registration?: { tunnel_config?: { peers?: FleetPeer[] } } }
  const placedA = (regA.registration?.tunnel_config?.peers ?? []).map(p => p.gateway_id)
  t.equal(placedA.length, 2, `two gateways placed for A: ${placedA.join(', ')}`)
  const hosts = { alpha: `alpha.${BASE_DOMAIN}`, bravo: `bravo.${BASE_DOMAIN}`, delta: `delta.${BASE_DOMAIN}` }
  const whoami: Record<string, string> = { alpha: 'container A\n', bravo: 'container B\n', delta: 'container D\n' }

  await t.test('every routed hostname answers through every gateway', async t => {
    for (const [name, host] of Object.entries(hosts)) {
      for (const id of GATEWAYS) {
        const got = await waitUntil(`${host} through ${id}`, async () => {
          const r = await httpsFetch(lab, net, host, HTTPS_PORT, '/whoami.txt', bundle, [], 10, through(id))
          return r.status === 200 ? r : false
        }, 45_000, 250)
        t.equal(got.body, whoami[name], `${host} through ${id}`)
      }
    }
  })

  const relayGateway = GATEWAYS.find(id => !placedA.includes(id))!
  await t.test(`a relayed path (${relayGateway} holds no session with A): 100 MB each way, WebSocket, the client's address once`, async t => {
    const target = httpsArgs(hosts.alpha, HTTPS_PORT, '/file.bin', bundle, through(relayGateway))
    const down = await downloadSha256(lab, net, target, 180)
    t.equal(down.sha256, fileSha, `download byte-exact (${(down.bytes / down.seconds / 1e6).toFixed(1)} MB/s)`)
    const up = await uploadGenerated(lab, net, httpsArgs(hosts.alpha, HTTPS_PORT, '/upload', bundle, through(relayGateway)), FILE_BYTES, 32, 180)
    t.equal(up.sink.sha256, up.sent, `upload byte-exact (${(FILE_BYTES / up.seconds / 1e6).toFixed(1)} MB/s)`)
    t.equal(up.sink.bytes, FILE_BYTES)
    const ws = await wsEcho(lab, net, `wss://${hosts.alpha}:${HTTPS_PORT}/ws`, bundle, through(relayGateway))
    t.ok(ws.ok, `WebSocket echo through the relay: ${JSON.stringify(ws)}`)
    // All of it went the default way: the client's TLS ended at the relaying gateway, the plaintext piped.
    const metrics = await lab.curl(fleet.gws[GATEWAYS.indexOf(relayGateway)].ns, ['-sS', '--fail', '--max-time', '5', 'http://127.0.0.1:9091/metrics'], { timeoutMs: 10_000 })
    const out = /^cc_relay_stream\{reason="out"\} (\d+)/m.exec(metrics.stdout)
    t.ok(Number(out?.[1] ?? 0) >= 3, `${relayGateway} piped the connections as streams (relay_stream out: ${out?.[1] ?? 'none'})`)
  })

  await t.test('kill -9 of the primary: the survivors answer within 10 s, no new registration, status stays connected', async t => {
    const primary = placedA[0]
    const index = GATEWAYS.indexOf(primary)
    const registrationsBefore = agent.output().split('\n').filter(l => l.includes('registered; tunnel configured')).length
    const killedAt = Date.now()
    gateways[index].process.killSync()
    const survivors = GATEWAYS.filter(id => id !== primary)
    try {
      for (const id of survivors) {
        await waitUntil(`${hosts.alpha} through ${id} after the kill`, async () => {
          const r = await httpsFetch(lab, net, hosts.alpha, HTTPS_PORT, '/whoami.txt', bundle, [], 3, through(id))
          return r.status === 200 && r.body === 'container A\n'
        }, 10_000 - (Date.now() - killedAt), 200)
      }
      const seconds = (Date.now() - killedAt) / 1000
      t.pass(`both survivors serve A ${seconds.toFixed(1)} s after kill -9 of ${primary}`)
      for (const id of survivors) {
        await waitUntil(`${hosts.delta} (kernel mode) through ${id} after the kill`, async () => {
          const r = await httpsFetch(lab, net, hosts.delta, HTTPS_PORT, '/whoami.txt', bundle, [], 3, through(id))
          return r.status === 200 && r.body === 'container D\n'
        }, Math.max(1_000, 10_000 - (Date.now() - killedAt)), 200)
      }
      t.pass(`and D (kernel mode) ${((Date.now() - killedAt) / 1000).toFixed(1)} s after`)
      t.equal(agent.output().split('\n').filter(l => l.includes('registered; tunnel configured')).length, registrationsBefore, 'the agent did not register again')
      const listed = await api.ok('GET', '/v1/instances', 200, { token: accessA })
      t.equal(listed.instances[0].status, 'connected', 'status stays connected')
    } finally {
      gateways[index] = await startGatewayProcess(lab, fleet.gws[index].ns, fleet.controlUrls, fleet.gatewayEnv(index))
    }
    const statuses: string[] = []
    for (let i = 0; i < 10; i++) {
      const r = await httpsFetch(lab, net, hosts.alpha, HTTPS_PORT, '/whoami.txt', bundle, [], 5, through(survivors[0]))
      statuses.push(`${r.status}`)
      statuses.push((await api.ok('GET', '/v1/instances', 200, { token: accessA })).instances[0].status)
      await sleep(500)
    }
    t.same([...new Set(statuses)].sort(), ['200', 'connected'], `nothing flaps while ${primary} returns`)
  })

  await t.test('a control replica killed while gateways long-poll it: changes through the other reach every gateway within 5 s', async t => {
    controls[0].process.killSync()
    try {
      // A new hostname for B, made through the surviving replica.
      await api2.ok('PATCH', `/v1/instances/${instB.id}`, 200, { body: { subdomain: 'charlie' }, token: accessB })
      const changedAt = Date.now()
      for (const id of GATEWAYS) {
        await waitUntil(`charlie through ${id} within 5 s of the change`, async () => {
          const r = await httpsFetch(lab, net, `charlie.${BASE_DOMAIN}`, HTTPS_PORT, '/whoami.txt', bundle, [], 3, through(id))
          return r.status === 200 && r.body === 'container B\n'
        }, 5_000 - (Date.now() - changedAt), 100)
      }
      t.pass(`the change reached every gateway in ${((Date.now() - changedAt) / 1000).toFixed(1)} s`)
    } finally {
      controls[0] = await startControl(lab, fleet.ctl.ns, fleet.controlEnv(0))
    }
  })

  await t.test('failed logins spread over both replicas are limited as one', async t => {
    const statuses: number[] = []
    for (let i = 0; i < 8; i++) {
      const client = i % 2 === 0 ? api : api2
      const r = await client.call('POST', '/v1/auth/login', { body: { email: 'fleet-a@example.com', password: `${PASSWORD}-wrong-${i}` } })
      statuses.push(r.status)
    }
    t.same(statuses.slice(0, 6), [401, 401, 401, 401, 401, 401], 'six failures answered 401 (three on each replica)')
    t.same(statuses.slice(6), [429, 429], 'then both replicas refuse: one limit')
  })
})
