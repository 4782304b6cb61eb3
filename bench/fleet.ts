/**
 * The fleet's relayed path against its direct path, one run: two control replicas and three
 * gateways on one Postgres (test/helpers/lab/fleet.ts), a container with stock wireguard-go and
 * nginx placed on two of the gateways. The same HTTPS requests go to a gateway holding the
 * container's session (direct) and to the third gateway, which relays them to it, in each relay
 * mode (CC_RELAY_MODE; the third gateway is restarted to change it). Phases alternate within each
 * round (direct, then each mode), so that the ratios of a round share the machine's load of the
 * moment; the medians over rounds are reported. Then `kill -9` of the container's primary gateway
 * and the time until the survivors answer again.
 *
 *   node bin/run-ts.js bench/fleet.ts [--size-mb 100] [--runs 3] [--modes stream,passthrough] [--wrk-seconds 10] [--wrk-connections 8]
 *   node bin/run-ts.js bench/fleet.ts --help
 *
 * Needs root, wireguard-go, wireguard-tools, nginx, curl, wrk and a Postgres server
 * (CC_TEST_DATABASE_URL or --database; a fresh database is created and dropped). Bounded: every
 * transfer and wrk run has a time limit; the lab is torn down at the end (or on Ctrl-C).
 */
import { writeFileSync } from 'node:fs'
import { cpus, loadavg } from 'node:os'
import { join } from 'node:path'
import { runOk, waitUntil } from '../test/helpers/lab.ts'
import { createInstance, httpsFetch, signUp } from '../test/helpers/lab/e2e.ts'
import { FLEET_BASE_DOMAIN, FLEET_GATEWAY_IDS, FLEET_HTTPS_PORT, startFleet, wireguardGoContainer } from '../test/helpers/lab/fleet.ts'
import { TRANSFER_OPTIONS, isMain, round2, transferValues, wrkOptions, wrkValues } from './baseline/cli.ts'
import { curlTransfer, measureSmall, median, sha256File } from './baseline/measure.ts'
import { cpuSeconds } from './baseline/proc.ts'
import { labBenchArgs, withBenchLab, writeBenchFiles } from './baseline/lab.ts'
import { startGatewayProcess } from '../test/helpers/lab/e2e.ts'
import { RELAY_MODES, type RelayMode } from '../gateway/edge/options.ts'

export interface FleetBenchOptions { sizeMB: number, runs: number, modes: RelayMode[], http1?: boolean, wrkSeconds: number, wrkConnections: number, databaseUrl: string }

/** relayed / direct for each figure (latency: direct / relayed, so that higher is better everywhere). */
export interface Ratio { downloadMBps: number, uploadMBps: number, requestsPerSecond: number, p99: number }

/**
 * One phase: one transfer each way and one wrk run, the load average when it ended, and the CPU
 * seconds the session holders (both placed gateways) and the relaying gateway spent on each part (user + system of the
 * process and its children, from /proc: a cost that shared cores distort far less than a rate).
 */
export interface Phase {
  download: number, upload: number, requestsPerSecond: number, p50: number, p99: number, load1: number
  cpu: { holder: CpuParts, relay: CpuParts }
}
/** CPU seconds per 100 MB downloaded and uploaded, and per 1,000 small requests. */
export interface CpuParts { download: number, upload: number, perThousandRequests: number }

/** A gateway and every process below it, live or reaped (it is started inside its namespace through a launcher). */
const EVERY_DESCENDANT = { levels: Infinity, reaped: true }

export interface FleetBenchResults {
  date: string
  machine: { cpus: number, model: string, loadStart: number[], loadEnd: number[] }
  direct: { via: string }
  relayed: { via: string }
  /** Each round: the direct phase, then one phase per relay mode, and each mode's ratios to that round's direct phase. */
  rounds: Array<{ direct: Phase, relayed: Partial<Record<RelayMode, Phase>>, ratio: Partial<Record<RelayMode, Ratio>> }>
  /** Medians over the rounds: of each phase's figures, and of the per-round ratios. */
  median: { direct: Phase, relayed: Partial<Record<RelayMode, Phase>>, ratio: Partial<Record<RelayMode, Ratio>> }
  failover: { killed: string, secondsToFirstAnswer: Record<string, number> }
}


function ratioOf (relayed: Phase, direct: Phase): Ratio {
  return {
    downloadMBps: round2(relayed.download / direct.download),
    uploadMBps: round2(relayed.upload / direct.upload),
    requestsPerSecond: round2(relayed.requestsPerSecond / direct.requestsPerSecond),
    p99: round2(direct.p99 / relayed.p99),
  }
}

function medianOf<T extends object> (rows: T[]): T {
  const keys = Object.keys(rows[0]) as Array<keyof T>
  return Object.fromEntries(keys.map(k => [k, typeof rows[0][k] === 'object' ? medianOf(rows.map(r => r[k] as object)) : median(rows.map(r => r[k] as number))])) as T
}

export async function runFleetBench (o: FleetBenchOptions): Promise<FleetBenchResults> {
  const loadStart = loadavg().map(round2)
  return await withBenchLab('fleet', async (lab, filesDir) => {
  const cleanups: Array<() => unknown> = []
  const owner = { teardown: (fn: () => unknown) => { cleanups.push(fn) } }
  try {
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
    const curlArgs = ['--cacert', fleet.caBundle, ...(o.http1 === true ? ['--http1.1'] : [])]
    const relayIndex = FLEET_GATEWAY_IDS.indexOf(relayVia)
    const expectedHash = await sha256File(bulkFile)
    const holderIndexes = placed.map(id => FLEET_GATEWAY_IDS.indexOf(id))
    const per100MB = 100e6 / bulkBytes
    /** One transfer each way and one wrk run from `ns`, with the CPU the holder and the relaying gateway spent on each. */
    const phase = async (ns: string): Promise<Phase> => {
      // Both placed gateways: the relaying one may pick either holder.
      const cpu = (): [number, number] => [
        holderIndexes.reduce((sum, i) => sum + cpuSeconds(fleet.gateways[i].process.pid, EVERY_DESCENDANT), 0),
        cpuSeconds(fleet.gateways[relayIndex].process.pid, EVERY_DESCENDANT),
      ]
      const spent = (before: [number, number], scale: number): [number, number] => { const now = cpu(); return [round2((now[0] - before[0]) * scale), round2((now[1] - before[1]) * scale)] }
      let mark = cpu()
      const down = await curlTransfer(lab, ns, [...curlArgs, '-o', '/dev/null', targets.download], bulkBytes, 'download', 300)
      const downCpu = spent(mark, per100MB)
      mark = cpu()
      const up = await curlTransfer(lab, ns, [...curlArgs, '-T', bulkFile, targets.upload], bulkBytes, 'upload', 300)
      const upCpu = spent(mark, per100MB)
      const sink = JSON.parse(up.body) as { bytes: number, sha256: string }
      if (sink.bytes !== bulkBytes || sink.sha256 !== expectedHash) throw new Error(`upload corrupted: sink got ${up.body}`)
      mark = cpu()
      const small = await measureSmall(lab, ns, targets.small, { wrkSeconds: o.wrkSeconds, wrkConnections: o.wrkConnections })
      const requests = Math.max(1, small.requestsPerSecond * small.seconds)
      const smallCpu = spent(mark, 1000 / requests)
      return {
        download: down.mbps,
        upload: up.mbps,
        requestsPerSecond: small.requestsPerSecond,
        p50: small.latencyMs.p50,
        p99: small.latencyMs.p99,
        load1: round2(loadavg()[0]),
        cpu: {
          holder: { download: downCpu[0], upload: upCpu[0], perThousandRequests: smallCpu[0] },
          relay: { download: downCpu[1], upload: upCpu[1], perThousandRequests: smallCpu[1] },
        },
      }
    }
    // The relaying gateway runs one mode at a time: restarted with CC_RELAY_MODE to change it.
    let currentMode: RelayMode = 'stream'
    const useMode = async (mode: RelayMode): Promise<void> => {
      if (mode === currentMode) return
      fleet.gateways[relayIndex].process.killSync()
      fleet.gateways[relayIndex] = await startGatewayProcess(lab, fleet.gws[relayIndex].ns, fleet.controlUrls, { ...fleet.gatewayEnv(relayIndex), CC_RELAY_MODE: mode })
      currentMode = mode
      await waitUntil(`${host} through ${relayVia} in mode ${mode}`, async () => (await httpsFetch(lab, relayNs, host, FLEET_HTTPS_PORT, '/whoami.txt', fleet.caBundle, [], 5, fleet.addressOf(relayVia)).catch(() => null))?.status === 200, 60_000, 250)
    }
    const rounds: FleetBenchResults['rounds'] = []
    for (let round = 1; round <= o.runs; round++) {
      process.stderr.write(`round ${round}: direct through ${placed[0]}\n`)
      const direct = await phase(directNs)
      const relayed: Partial<Record<RelayMode, Phase>> = {}
      const ratio: Partial<Record<RelayMode, Ratio>> = {}
      for (const mode of o.modes) {
        await useMode(mode)
        process.stderr.write(`round ${round}: relayed (${mode}) through ${relayVia} to the session's gateway\n`)
        relayed[mode] = await phase(relayNs)
        ratio[mode] = ratioOf(relayed[mode], direct)
      }
      rounds.push({ direct, relayed, ratio })
      process.stderr.write(`round ${round}: ${JSON.stringify({ direct, relayed, ratio })}\n`)
    }
    const medians: FleetBenchResults['median'] = {
      direct: medianOf(rounds.map(r => r.direct)),
      relayed: Object.fromEntries(o.modes.map(m => [m, medianOf(rounds.map(r => r.relayed[m]!))])),
      ratio: Object.fromEntries(o.modes.map(m => [m, medianOf(rounds.map(r => r.ratio[m]!))])),
    }

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
      direct: { via: placed[0] },
      relayed: { via: `${relayVia} -> session holder` },
      rounds,
      median: medians,
      failover: { killed: placed[0], secondsToFirstAnswer },
    }
  } finally {
    for (const fn of cleanups.reverse()) await fn()
  }
  })
}

const SPEC = {
  name: 'bench/fleet.ts',
  about: `The fleet: HTTPS through a gateway holding the container's session (direct) against the same
requests through a gateway that relays them to it, in each relay mode, phases alternating within
each of --runs rounds (one transfer each way and one wrk run per phase); per-round ratios and
their medians (goal: relayed >= 0.7x direct). Then kill -9 of the container's primary gateway and
the seconds until each survivor answers (goal <= 10 s). JSON on stdout.

Needs root (network namespaces), wireguard-go, wireguard-tools, nginx, curl, wrk and Postgres
(CC_TEST_DATABASE_URL or --database; a fresh database is created and dropped).`,
  options: {
    ...TRANSFER_OPTIONS,
    runs: { type: 'string', default: '3', value: 'N', help: 'rounds (direct, then each mode), 1-10' },
    'http1.1': { type: 'boolean', default: false, help: 'bulk transfers over HTTP/1.1 (default: HTTP/2 by ALPN)' },
    modes: { type: 'string', default: 'stream,passthrough', value: 'LIST', help: `relay modes to measure, comma-separated: ${RELAY_MODES.join(', ')}` },
    ...wrkOptions(8),
    database: { type: 'string', value: 'URL', help: 'postgres:// URL of a server to create the throw-away database on (default: CC_TEST_DATABASE_URL)' },
  },
} as const

function modesOption (value: string | undefined): RelayMode[] {
  const modes = (value ?? 'stream,passthrough').split(',')
  for (const m of modes) {
    if (!(RELAY_MODES as readonly string[]).includes(m)) throw new Error(`--modes: ${m} is not one of ${RELAY_MODES.join(', ')}`)
  }
  return modes as RelayMode[]
}

if (isMain(import.meta.url)) {
  const options = labBenchArgs(SPEC, (values): FleetBenchOptions => ({
    ...transferValues(values),
    modes: modesOption(values.modes as string | undefined),
    http1: values['http1.1'] as boolean,
    ...wrkValues(values),
    databaseUrl: (values.database as string | undefined) ?? process.env.CC_TEST_DATABASE_URL ?? '',
  }))
  if (options.databaseUrl === '') {
    process.stderr.write(`${SPEC.name}: no Postgres: set CC_TEST_DATABASE_URL or --database\n`)
    process.exit(1)
  }
  process.stdout.write(JSON.stringify(await runFleetBench(options), null, 2) + '\n')
}
