/**
 * Baseline for the gateway benchmarks: the same HTTP measurements through wireguard-go on both
 * ends (Linux TCP on both sides), in two lab namespaces:
 *
 *   ns client (10.100.0.1, wireguard-go) ==veth 198.18.0.0/30== ns origin (10.100.0.2, wireguard-go)
 *     curl / wrk                                                   nginx :80 (tmpfs files), HTTP sink :8080
 *
 * then the same with Caddy in the client namespace terminating TLS (internal CA) and proxying
 * through the tunnel, which is the shape of our gateway (TLS + reverse proxy + WireGuard), and,
 * for scale, over the bare veth (no tunnel). Prints JSON.
 *
 *   node bin/run-ts.js bench/lab-baseline.ts [--size-mb 100] [--runs 3] [--wrk-seconds 10]
 *       [--wrk-connections 16] [--no-tls] [--no-direct]
 *   node bin/run-ts.js bench/lab-baseline.ts --help
 *
 * Needs root, wireguard-go, wireguard-tools, nginx, caddy (unless --no-tls), curl, wrk. Bounded: every transfer and the wrk
 * run have time limits; the lab is torn down at the end (or on Ctrl-C).
 */
import { cpus } from 'node:os'
import { runOk } from '../test/helpers/lab.ts'
import { SMALL_BYTES, caddyfile, labBenchArgs, withBenchLab, wireguardGoPair, writeBenchFiles } from './baseline/lab.ts'
import { measureHttp, type HttpResults, type MeasureOptions } from './baseline/measure.ts'
import { TRANSFER_OPTIONS, isMain, transferValues, wrkOptions, wrkValues } from './baseline/cli.ts'

export interface BaselineOptions {
  sizeMB: number
  runs: number
  wrkSeconds: number
  wrkConnections: number
  tls: boolean
  direct: boolean
}

export interface BaselineResults {
  bench: 'lab-baseline'
  date: string
  machine: { cpus: number; cpuModel: string; node: string; wireguardGo: string }
  bulkBytes: number
  smallBytes: number
  wireguardGo: HttpResults
  /** Caddy (TLS, reverse proxy) in the client namespace in front of the same tunnel. */
  caddyTlsWireguardGo?: HttpResults
  direct?: HttpResults
}

const TLS_HOST = 'bench.test'
const TLS_PORT = 8443

/** Caddy as a TLS-terminating reverse proxy to the origin (uploads to the sink, the rest to nginx). */
const caddyRoutes = (origin: string): string => `  handle /sink* {
    reverse_proxy ${origin}:8080
  }
  handle {
    reverse_proxy ${origin}:80
  }`

export async function runBaseline (o: BaselineOptions): Promise<BaselineResults> {
  return await withBenchLab('baseline', async (lab, filesDir) => {
    const { bulkFile, bulkBytes } = writeBenchFiles(filesDir, o.sizeMB)
    const client = await lab.namespace('client')
    const origin = await lab.namespace('origin')
    const link = await lab.link(client, origin)
    const { originWg } = await wireguardGoPair(lab, client, origin, link, { clientAddress: '10.100.0.1', originAddress: '10.100.0.2', clientPort: 51820, originPort: 51820 })
    await lab.startNginx(origin, { root: filesDir, listen: '0.0.0.0:80' })
    await lab.startHttpSink(origin, '0.0.0.0:8080')

    const measure: MeasureOptions = { bulkFile, bulkBytes, runs: o.runs, wrkSeconds: o.wrkSeconds, wrkConnections: o.wrkConnections }
    const via = (host: string): { download: string; upload: string; small: string } =>
      ({ download: `http://${host}/bulk.bin`, upload: `http://${host}:8080/sink`, small: `http://${host}/small.bin` })

    const wireguardGo = await measureHttp(lab, client, via(originWg.tunnelIp), measure)
    let caddyTlsWireguardGo: HttpResults | undefined
    if (o.tls) {
      lab.hosts(client, { [TLS_HOST]: '127.0.0.1' })
      await lab.startCaddy(client, caddyfile(`https://${TLS_HOST}:${TLS_PORT}`, caddyRoutes(originWg.tunnelIp)), [TLS_PORT])
      const base = `https://${TLS_HOST}:${TLS_PORT}`
      caddyTlsWireguardGo = await measureHttp(lab, client, { download: `${base}/bulk.bin`, upload: `${base}/sink`, small: `${base}/small.bin` },
        { ...measure, curlArgs: ['-k'] })
    }
    const direct = o.direct ? await measureHttp(lab, client, via(link.b.ip), measure) : undefined
    const wgVersion = (await runOk('wireguard-go', ['--version'])).split('\n')[0].trim()
    return {
      bench: 'lab-baseline',
      date: new Date().toISOString(),
      machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model ?? 'unknown', node: process.version, wireguardGo: wgVersion },
      bulkBytes,
      smallBytes: SMALL_BYTES,
      wireguardGo,
      ...(caddyTlsWireguardGo !== undefined ? { caddyTlsWireguardGo } : {}),
      ...(direct !== undefined ? { direct } : {}),
    }
  })
}

const SPEC = {
  name: 'bench/lab-baseline.ts',
  about: `Baseline for the gateway benchmarks: bulk download and upload (curl, SHA-256 checked) and small
requests (wrk) through wireguard-go on both ends, Linux TCP on both sides; then with Caddy
terminating TLS in front of the same tunnel, and over the bare veth (no tunnel). JSON on stdout,
about a minute.

Needs root (network namespaces), wireguard-go, wireguard-tools, nginx, caddy (unless --no-tls),
curl, wrk. The lab is torn down at the end, also on Ctrl-C.`,
  options: {
    ...TRANSFER_OPTIONS,
    ...wrkOptions(16),
    'no-tls': { type: 'boolean', default: false, help: 'skip Caddy (TLS + reverse proxy) in front of the tunnel' },
    'no-direct': { type: 'boolean', default: false, help: 'skip the bare veth (no tunnel) measurement' },
  },
} as const

if (isMain(import.meta.url)) {
  const options = labBenchArgs(SPEC, (values): BaselineOptions => ({
    ...transferValues(values),
    ...wrkValues(values),
    tls: !values['no-tls'],
    direct: !values['no-direct'],
  }))
  const results = await runBaseline(options)
  process.stdout.write(JSON.stringify(results, null, 2) + '\n')
}
