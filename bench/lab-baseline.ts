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
import { mkdirSync, rmSync, writeFileSync, openSync, writeSync, closeSync, existsSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import { cpus } from 'node:os'
import { join } from 'node:path'
import { Lab, labMissing, onExitCleanup, runOk } from '../test/helpers/lab.ts'
import { measureHttp, type HttpResults, type MeasureOptions } from './baseline/measure.ts'
import { TRANSFER_OPTIONS, exitOnBrokenPipe, isMain, parseBenchArgs, transferValues, wrkOptions, wrkValues } from './baseline/cli.ts'

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

const SMALL_BYTES = 1024
const TLS_HOST = 'bench.test'
const TLS_PORT = 8443

/** Caddy as a TLS-terminating reverse proxy to the origin (uploads to the sink, the rest to nginx). */
function caddyfile (origin: string): string {
  return `{
  admin off
  skip_install_trust
  auto_https disable_redirects
  log {
    level ERROR
  }
}
https://${TLS_HOST}:${TLS_PORT} {
  tls internal
  handle /sink* {
    reverse_proxy ${origin}:8080
  }
  handle {
    reverse_proxy ${origin}:80
  }
}
`
}

/** Writes `bytes` of random data (in 1 MiB blocks, so memory stays flat). */
function writeRandomFile (path: string, bytes: number): void {
  const fd = openSync(path, 'w')
  try {
    const block = randomBytes(1 << 20)
    for (let left = bytes; left > 0; left -= block.length) writeSync(fd, block, 0, Math.min(left, block.length))
  } finally {
    closeSync(fd)
  }
}

export async function runBaseline (o: BaselineOptions): Promise<BaselineResults> {
  const missing = labMissing()
  if (missing !== null) throw new Error(`lab unavailable: ${missing}`)
  const lab = await Lab.create()
  // Files on tmpfs so the disk is not what we measure.
  const filesDir = existsSync('/dev/shm') ? join('/dev/shm', `cc-bench-${lab.runId}`) : join(lab.dir, 'files')
  const removeFiles = (): void => rmSync(filesDir, { recursive: true, force: true })
  const unregister = onExitCleanup(removeFiles) // Ctrl-C, SIGTERM, EPIPE: the finally below does not run
  try {
    mkdirSync(filesDir, { recursive: true })
    const bulkBytes = Math.round(o.sizeMB * 1e6)
    const bulkFile = join(filesDir, 'bulk.bin')
    writeRandomFile(bulkFile, bulkBytes)
    writeFileSync(join(filesDir, 'small.bin'), randomBytes(SMALL_BYTES))

    const client = await lab.namespace('client')
    const origin = await lab.namespace('origin')
    const { a: clientEnd, b: originEnd } = await lab.link(client, origin)
    const clientWg = await lab.startWireguardGo(client, { address: '10.100.0.1/32', listenPort: 51820 })
    const originWg = await lab.startWireguardGo(origin, {
      address: '10.100.0.2/32',
      listenPort: 51820,
      peers: [{ publicKey: clientWg.publicKey, allowedIPs: ['10.100.0.1/32'], endpoint: `${clientEnd.ip}:51820` }],
    })
    await clientWg.setPeer({ publicKey: originWg.publicKey, allowedIPs: ['10.100.0.2/32'], endpoint: `${originEnd.ip}:51820` })
    await lab.startNginx(origin, { root: filesDir, listen: '0.0.0.0:80' })
    await lab.startHttpSink(origin, '0.0.0.0:8080')

    const measure: MeasureOptions = { bulkFile, bulkBytes, runs: o.runs, wrkSeconds: o.wrkSeconds, wrkConnections: o.wrkConnections }
    const via = (host: string): { download: string; upload: string; small: string } =>
      ({ download: `http://${host}/bulk.bin`, upload: `http://${host}:8080/sink`, small: `http://${host}/small.bin` })

    const wireguardGo = await measureHttp(lab, client, via(originWg.tunnelIp), measure)
    let caddyTlsWireguardGo: HttpResults | undefined
    if (o.tls) {
      lab.hosts(client, { [TLS_HOST]: '127.0.0.1' })
      await lab.startCaddy(client, caddyfile(originWg.tunnelIp), [TLS_PORT])
      const base = `https://${TLS_HOST}:${TLS_PORT}`
      caddyTlsWireguardGo = await measureHttp(lab, client, { download: `${base}/bulk.bin`, upload: `${base}/sink`, small: `${base}/small.bin` },
        { ...measure, curlArgs: ['-k'] })
    }
    const direct = o.direct ? await measureHttp(lab, client, via(originEnd.ip), measure) : undefined
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
  } finally {
    await lab.destroy()
    removeFiles()
    unregister()
  }
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
  exitOnBrokenPipe()
  const options = parseBenchArgs(SPEC, (values): BaselineOptions => ({
    ...transferValues(values),
    ...wrkValues(values),
    tls: !values['no-tls'],
    direct: !values['no-direct'],
  }))
  const missing = labMissing()
  if (missing !== null) {
    process.stderr.write(`${SPEC.name}: lab unavailable: ${missing}\n`)
    process.exit(1)
  }
  const results = await runBaseline(options)
  process.stdout.write(JSON.stringify(results, null, 2) + '\n')
}
