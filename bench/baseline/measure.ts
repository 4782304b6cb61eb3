/**
 * HTTP measurements run from inside a lab namespace, the same procedure for the wireguard-go
 * baseline and for our gateway so both can be compared in one run:
 *  - bulk download: `curl -o /dev/null` of a large file, single connection, MB/s (10^6 bytes/s);
 *  - bulk upload: `curl -T FILE` to the HTTP sink (test/helpers/http-sink.ts), whose SHA-256 of the
 *    received body must match the file;
 *  - small requests: `wrk` (bounded by -d) against a small file, requests/s and latency.
 */
import { createHash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import type { Lab } from '../../test/helpers/lab.ts'

export interface HttpTargets {
  /** URL of the large file. */
  download: string
  /** URL of the upload sink. */
  upload: string
  /** URL of a small file for wrk. */
  small: string
}

export interface MeasureOptions {
  /** Local path of the large file (uploaded as is; its size is the expected download size). */
  bulkFile: string
  bulkBytes: number
  /** Repetitions of each bulk transfer; the median is reported. */
  runs?: number
  wrkSeconds?: number
  wrkConnections?: number
  wrkThreads?: number
  /** Extra curl arguments (e.g. -k for a test CA). Host names: give the namespace a hosts file with lab.hosts. */
  curlArgs?: string[]
  /** Limit per curl transfer. */
  transferTimeoutS?: number
}

export interface TransferStats { runsMBps: number[]; medianMBps: number }

export interface SmallRequestStats {
  requestsPerSecond: number
  latencyMs: { p50: number; p90: number; p99: number }
  errors: number
  connections: number
  seconds: number
}

export interface HttpResults {
  download: TransferStats
  upload: TransferStats
  small: SmallRequestStats
}

const round = (v: number): number => Math.round(v * 100) / 100

export function median (values: number[]): number {
  const s = [...values].sort((a, b) => a - b)
  const mid = s.length >> 1
  return s.length % 2 === 1 ? s[mid] : round((s[mid - 1] + s[mid]) / 2)
}

export async function sha256File (path: string): Promise<string> {
  const hash = createHash('sha256')
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer)
  return hash.digest('hex')
}

/** One curl transfer; returns MB/s from curl's own byte count and total time. */
export async function curlTransfer (lab: Lab, ns: string, args: string[], expectBytes: number, what: string, timeoutS: number): Promise<{ mbps: number; body: string }> {
  const r = await lab.curl(ns, ['-sS', '--fail', '--max-time', String(timeoutS), ...args,
    '-w', '\n%{size_download} %{size_upload} %{time_total}'], { timeoutMs: (timeoutS + 10) * 1000 })
  if (r.code !== 0) throw new Error(`${what}: curl exit ${r.code}: ${r.stderr.trim()}`)
  const lines = r.stdout.trimEnd().split('\n')
  const [down, up, total] = lines.pop()!.split(' ').map(Number)
  const bytes = Math.max(down, up)
  if (bytes !== expectBytes) throw new Error(`${what}: transferred ${bytes} bytes, expected ${expectBytes}`)
  return { mbps: round(bytes / total / 1e6), body: lines.join('\n') }
}

/** Parses wrk's summary (with --latency). */
export function parseWrk (text: string, connections: number, seconds: number): SmallRequestStats {
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(text)
  if (rps === null) throw new Error(`no Requests/sec in wrk output:\n${text.slice(-2000)}`)
  const toMs = (v: string, unit: string): number => Number(v) * ({ us: 0.001, ms: 1, s: 1000 }[unit] ?? NaN)
  const pct = (p: string): number => {
    const m = new RegExp(`^\\s+${p}%\\s+([\\d.]+)(us|ms|s)`, 'm').exec(text)
    return m === null ? NaN : round(toMs(m[1], m[2]))
  }
  let errors = 0
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(text)
  if (sock !== null) errors += sock.slice(1).map(Number).reduce((a, b) => a + b, 0)
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(text)
  if (non2xx !== null) errors += Number(non2xx[1])
  return { requestsPerSecond: round(Number(rps[1])), latencyMs: { p50: pct('50'), p90: pct('90'), p99: pct('99') }, errors, connections, seconds }
}

export async function measureHttp (lab: Lab, ns: string, targets: HttpTargets, o: MeasureOptions): Promise<HttpResults> {
  const runs = o.runs ?? 3
  const timeoutS = o.transferTimeoutS ?? 120
  const curlArgs = o.curlArgs ?? []
  const expectedHash = await sha256File(o.bulkFile)

  const downloads: number[] = []
  for (let i = 0; i < runs; i++) {
    const { mbps } = await curlTransfer(lab, ns, [...curlArgs, '-o', '/dev/null', targets.download], o.bulkBytes, 'download', timeoutS)
    downloads.push(mbps)
  }
  const uploads: number[] = []
  for (let i = 0; i < runs; i++) {
    const { mbps, body } = await curlTransfer(lab, ns, [...curlArgs, '-T', o.bulkFile, targets.upload], o.bulkBytes, 'upload', timeoutS)
    const sink = JSON.parse(body) as { bytes: number; sha256: string }
    if (sink.bytes !== o.bulkBytes || sink.sha256 !== expectedHash) throw new Error(`upload corrupted: sink got ${body}`)
    uploads.push(mbps)
  }

  return {
    download: { runsMBps: downloads, medianMBps: median(downloads) },
    upload: { runsMBps: uploads, medianMBps: median(uploads) },
    small: await measureSmall(lab, ns, targets.small, o),
  }
}

/** One wrk run on `url` (the 1 KiB file) from namespace `ns`. */
export async function measureSmall (lab: Lab, ns: string, url: string, o: Pick<MeasureOptions, 'wrkSeconds' | 'wrkConnections' | 'wrkThreads'>): Promise<SmallRequestStats> {
  const seconds = Math.min(Math.max(1, o.wrkSeconds ?? 10), 60)
  const connections = o.wrkConnections ?? 16
  // wrk does not verify certificates; names resolve through the namespace's hosts file (lab.hosts).
  const wrk = await lab.exec(ns, 'wrk', ['-t', String(o.wrkThreads ?? 1), '-c', String(connections), '-d', `${seconds}s`,
    '--timeout', '5s', '--latency', url], { timeoutMs: (seconds + 30) * 1000 })
  if (wrk.code !== 0) throw new Error(`wrk exit ${wrk.code}: ${wrk.stderr.trim()}`)
  return parseWrk(wrk.stdout, connections, seconds)
}

/**
 * Several wrk rounds of one side as one figure: the median of each measure across rounds (each
 * percentile on its own), errors summed, the rounds kept.
 */
export function medianSmall (rounds: SmallRequestStats[]): SmallRequestStats & { rounds: SmallRequestStats[] } {
  const of = (pick: (r: SmallRequestStats) => number): number => median(rounds.map(pick))
  return {
    requestsPerSecond: of(r => r.requestsPerSecond),
    latencyMs: { p50: of(r => r.latencyMs.p50), p90: of(r => r.latencyMs.p90), p99: of(r => r.latencyMs.p99) },
    errors: rounds.reduce((n, r) => n + r.errors, 0),
    connections: rounds[0]!.connections,
    seconds: rounds[0]!.seconds,
    rounds,
  }
}
