/**
 * The fleet's relayed path against its direct path, one run: two control replicas and three
 * gateways on one Postgres (test/helpers/lab/fleet.ts), a container with stock wireguard-go and
 * nginx placed on two of the gateways. The same HTTPS requests go to a gateway holding the
 * container's session (direct) and to the third gateway, which relays them to it. Then `kill -9`
 * of the container's primary gateway and the time until the survivors answer again.
 *
 *   node bin/run-ts.js bench/fleet.ts [--size-mb 100] [--runs 3] [--wrk-seconds 10] [--wrk-connections 8]
 *   node bin/run-ts.js bench/fleet.ts --help
 *
 * Needs root, wireguard-go, wireguard-tools, nginx, curl, wrk and a Postgres server
 * (CC_TEST_DATABASE_URL or --database; a fresh database is created and dropped). Bounded: every
 * transfer and wrk run has a time limit; the lab is torn down at the end (or on Ctrl-C).
 */
import { writeFileSync } from 'node:fs'
import { cpus, loadavg } from 'node:os'
import { join } from 'node:path'
import { runOk, waitUntil, type Lab } from '../test/helpers/lab.ts'
import { createInstance, httpsFetch, signUp } from '../test/helpers/lab/e2e.ts'
import { FLEET_BASE_DOMAIN, FLEET_GATEWAY_IDS, FLEET_HTTPS_PORT, startFleet, wireguardGoContainer } from '../test/helpers/lab/fleet.ts'
import { TRANSFER_OPTIONS, isMain, round2, transferValues, wrkOptions, wrkValues } from './baseline/cli.ts'
import { measureHttp, type HttpResults } from './baseline/measure.ts'
import { labBenchArgs, withBenchLab, writeBenchFiles } from './baseline/lab.ts'

export interface FleetBenchOptions { sizeMB: number, runs: number, wrkSeconds: number, wrkConnections: number, databaseUrl: string }

export interface FleetBenchResults {
  date: string
  machine: { cpus: number, model: string, loadStart: number[], loadEnd: number[] }
  direct: HttpResults & { via: string }
  relayed: HttpResults & { via: string }
  /** relayed / direct for each figure (latency: direct / relayed, so that higher is better everywhere). */
  ratio: { downloadMBps: number, uploadMBps: number, requestsPerSecond: number, p99: number }
  failover: { killed: string, secondsToFirstAnswer: Record<string, number> }
}

export async function runFleetBench (o: FleetBenchOptions): Promise<FleetBenchResults> {
  const loadStart = loadavg().map(round2)
  return await withBenchLab('fleet', async (lab, filesDir) => {
    const cleanups: Array<() => unknown> = []
    const owner = { teardown: (fn: () => unknown) => { cleanups.push(fn) } }
    try {
      return await fleetBench(o, lab, filesDir, owner, loadStart)
    } finally {
      for (const fn of cleanups.reverse()) await fn()
    }
  })
}

async function fleetBench (o: FleetBenchOptions, lab: Lab, filesDir: string, owner: { teardown (fn: () => unknown): void }, loadStart: number[]): Promise<FleetBenchResults> {
  const { bulkFile, bulkBytes } = writeBenchFiles(filesDir, o.sizeMB)
  writeFileSync(join(filesDir, 'whoami.txt'), 'origin\n')

  process.stderr.write('starting two control replicas and three gateways\n')
  const fleet = await startFleet(lab, owner, o.databaseUrl)
  const access = await signUp(fleet.apis[0], fleet.outbox, 'bench@example.com')
  const instance = await createInstance(fleet.apis[0], access, 'bench')
  const container = await wireguardGoContainer(lab, fleet, 'origin', instance.token, filesDir)
  const placed = container.peers.map(p => p.gateway_id)
  const relayVia = FLEET_GATEWAY_IDS.find(id => !placed.includes(id))
  if (relayVia === undefined || placed.length < 2) throw new Error(`expected two placed gateways of three, got ${placed.join(', ')}`)
  const host = `bench.${FLEET_BASE_DOMAIN}`

  // One client namespace per path: wrk takes names from the namespace's hosts file.
  const client = async (role: string, gatewayId: string): Promise<string> => {
    const ns = await lab.namespace(role)
    const link = await lab.link(fleet.net, ns)
    await runOk('ip', ['-n', ns, 'route', 'add', 'default', 'via', link.a.ip])
    lab.hosts(ns, { [host]: fleet.addressOf(gatewayId) })
    await waitUntil(`${host} through ${gatewayId}`, async () => (await httpsFetch(lab, ns, host, FLEET_HTTPS_PORT, '/whoami.txt', fleet.caBundle, [], 5, fleet.addressOf(gatewayId))).status === 200, 60_000, 250)
    return ns
  }
  const directNs = await client('cdirect', placed[0])
  const relayNs = await client('crelay', relayVia)
  const base = `https://${host}:${FLEET_HTTPS_PORT}`
  const targets = { download: `${base}/bulk.bin`, upload: `${base}/upload`, small: `${base}/small.bin` }
  const measure = { bulkFile, bulkBytes, runs: o.runs, wrkSeconds: o.wrkSeconds, wrkConnections: o.wrkConnections, curlArgs: ['--cacert', fleet.caBundle], transferTimeoutS: 300 }
  process.stderr.write(`direct through ${placed[0]}\n`)
  const direct = await measureHttp(lab, directNs, targets, measure)
  process.stderr.write(`relayed through ${relayVia} to the session's gateway\n`)
  const relayed = await measureHttp(lab, relayNs, targets, measure)

  process.stderr.write(`kill -9 of ${placed[0]}\n`)
  const killedAt = Date.now()
  fleet.gateways[FLEET_GATEWAY_IDS.indexOf(placed[0])].process.killSync()
  const secondsToFirstAnswer: Record<string, number> = {}
  await Promise.all(FLEET_GATEWAY_IDS.filter(id => id !== placed[0]).map(async id => {
    await waitUntil(`${host} through ${id} after the kill`, async () => {
      const r = await httpsFetch(lab, fleet.net, host, FLEET_HTTPS_PORT, '/whoami.txt', fleet.caBundle, [], 2, fleet.addressOf(id)).catch(() => null)
      return r?.status === 200
    }, 60_000, 100)
    secondsToFirstAnswer[id] = round2((Date.now() - killedAt) / 1000)
  }))

  return {
    date: new Date().toISOString(),
    machine: { cpus: cpus().length, model: cpus()[0]?.model ?? 'unknown', loadStart, loadEnd: loadavg().map(round2) },
    direct: { ...direct, via: placed[0] },
    relayed: { ...relayed, via: `${relayVia} -> session holder` },
    ratio: {
      downloadMBps: round2(relayed.download.medianMBps / direct.download.medianMBps),
      uploadMBps: round2(relayed.upload.medianMBps / direct.upload.medianMBps),
      requestsPerSecond: round2(relayed.small.requestsPerSecond / direct.small.requestsPerSecond),
      p99: round2(direct.small.latencyMs.p99 / relayed.small.latencyMs.p99),
    },
    failover: { killed: placed[0], secondsToFirstAnswer },
  }
}

const SPEC = {
  name: 'bench/fleet.ts',
  about: `The fleet: HTTPS through a gateway holding the container's session (direct) against the same
requests through a gateway that relays them to it, in one run (goal: relayed >= 0.7x direct); then
kill -9 of the container's primary gateway and the seconds until each survivor answers (goal <= 10 s).
JSON on stdout.

Needs root (network namespaces), wireguard-go, wireguard-tools, nginx, curl, wrk and Postgres
(CC_TEST_DATABASE_URL or --database; a fresh database is created and dropped).`,
  options: {
    ...TRANSFER_OPTIONS,
    ...wrkOptions(8),
    database: { type: 'string', value: 'URL', help: 'postgres:// URL of a server to create the throw-away database on (default: CC_TEST_DATABASE_URL)' },
  },
} as const

if (isMain(import.meta.url)) {
  const options = labBenchArgs(SPEC, (values): FleetBenchOptions => ({
    ...transferValues(values),
    ...wrkValues(values),
    databaseUrl: (values.database as string | undefined) ?? process.env.CC_TEST_DATABASE_URL ?? '',
  }))
  if (options.databaseUrl === '') {
    process.stderr.write(`${SPEC.name}: no Postgres: set CC_TEST_DATABASE_URL or --database\n`)
    process.exit(1)
  }
  process.stdout.write(JSON.stringify(await runFleetBench(options), null, 2) + '\n')
}
