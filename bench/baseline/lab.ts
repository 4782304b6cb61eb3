/**
 * The lab set-up the gateway benchmarks share: a lab whose served files sit on tmpfs (so the disk
 * is not what is measured) and are removed at the end, also on Ctrl-C; the bulk and small files the
 * measurements fetch; wireguard-go on both ends of a link; Caddy as a TLS-terminating proxy.
 */
import { closeSync, existsSync, mkdirSync, openSync, rmSync, writeFileSync, writeSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import { Lab, labMissing, onExitCleanup, type LinkEnds } from '../../test/helpers/lab.ts'
import { exitOnBrokenPipe, parseBenchArgs, type BenchOptions, type BenchSpec, type BenchValues } from './cli.ts'
import type { WireguardGo } from '../../test/helpers/lab/wireguard-go.ts'

/** What the small-request measurements fetch (`small.bin`). */
export const SMALL_BYTES = 1024

/**
 * Runs `bench` in a fresh lab with `filesDir` (for nginx to serve) on tmpfs where there is one;
 * tears the lab down and removes the files afterwards, whatever happens.
 */
export async function withBenchLab<T> (name: string, bench: (lab: Lab, filesDir: string) => Promise<T>): Promise<T> {
  const lab = await Lab.create()
  const filesDir = existsSync('/dev/shm') ? join('/dev/shm', `cc-bench-${name}-${lab.runId}`) : join(lab.dir, 'files')
  const removeFiles = (): void => { rmSync(filesDir, { recursive: true, force: true }) }
  const unregister = onExitCleanup(removeFiles) // Ctrl-C, SIGTERM, EPIPE: the finally below does not run
  try {
    mkdirSync(filesDir, { recursive: true })
    return await bench(lab, filesDir)
  } finally {
    await lab.destroy()
    removeFiles()
    unregister()
  }
}

/** `bytes` of random data in 1 MiB blocks (the same block repeated: cheap to write, memory stays flat, not compressible). */
export function writeRandomFile (path: string, bytes: number): void {
  const fd = openSync(path, 'w')
  try {
    const block = randomBytes(1 << 20)
    for (let left = bytes; left > 0; left -= block.length) writeSync(fd, block, 0, Math.min(left, block.length))
  } finally {
    closeSync(fd)
  }
}

/** Writes `bulk.bin` (`sizeMB` of random data) and `small.bin` (SMALL_BYTES) into `filesDir`. */
export function writeBenchFiles (filesDir: string, sizeMB: number): { bulkFile: string, bulkBytes: number } {
  const bulkBytes = Math.round(sizeMB * 1e6)
  const bulkFile = join(filesDir, 'bulk.bin')
  writeRandomFile(bulkFile, bulkBytes)
  writeFileSync(join(filesDir, 'small.bin'), randomBytes(SMALL_BYTES))
  return { bulkFile, bulkBytes }
}

/** Tunnel addresses (/32) and UDP ports of the two wireguard-go ends. */
export interface WireguardGoPairOptions { clientAddress: string, originAddress: string, clientPort: number, originPort: number }

/** wireguard-go in `client` and in `origin`, each the other's peer over `link` (client on its `a` end). */
export async function wireguardGoPair (lab: Lab, client: string, origin: string, link: LinkEnds, o: WireguardGoPairOptions): Promise<{ clientWg: WireguardGo, originWg: WireguardGo }> {
  const clientWg = await lab.startWireguardGo(client, { address: `${o.clientAddress}/32`, listenPort: o.clientPort })
  const originWg = await lab.startWireguardGo(origin, {
    address: `${o.originAddress}/32`,
    listenPort: o.originPort,
    peers: [{ publicKey: clientWg.publicKey, allowedIPs: [`${o.clientAddress}/32`], endpoint: `${link.a.ip}:${o.clientPort}` }],
  })
  await clientWg.setPeer({ publicKey: originWg.publicKey, allowedIPs: [`${o.originAddress}/32`], endpoint: `${link.b.ip}:${o.originPort}` })
  return { clientWg, originWg }
}

/** A Caddyfile serving `site` (https://host:port) with Caddy's internal CA; `routes` is the site's body. Errors-only log. */
export function caddyfile (site: string, routes: string): string {
  return `{
  admin off
  skip_install_trust
  auto_https disable_redirects
  log {
    level ERROR
  }
}
${site} {
  tls internal
${routes}
}
`
}

/**
 * The command line of a bench that needs the lab, for its main: exits as parseBenchArgs does on
 * --help or a bad option, and with one line and status 1 where the lab cannot run here.
 */
export function labBenchArgs<O extends BenchOptions, T> (spec: BenchSpec<O>, convert: (values: BenchValues<O>) => T): T {
  exitOnBrokenPipe()
  const options = parseBenchArgs(spec, convert)
  const missing = labMissing()
  if (missing !== null) {
    process.stderr.write(`${spec.name}: lab unavailable: ${missing}\n`)
    process.exit(1)
  }
  return options
}
