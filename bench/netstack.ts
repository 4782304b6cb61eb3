/**
 * Userspace TCP benchmark: single-connection bulk download and upload between our gateway's
 * netstack (WireGuard + IPv4 + TCP in one node process, test/helpers/netstack-driver.ts) and a
 * wireguard-go peer with the Linux stack behind it, against the baseline of wireguard-go on both
 * ends with Linux TCP on both ends (bench/baseline/measure.ts, the procedure of
 * bench/lab-baseline.ts), with the same file, the same origin, in the same run; then ours with
 * injected datagram loss. Prints JSON on stdout and a summary on stderr.
 *
 *   ns client (10.100.0.3, wireguard-go)  ==veth==  ns origin (10.100.0.2, wireguard-go)
 *     curl (baseline)                                 nginx :80 (tmpfs file), HTTP sink :8080
 *   ns gw (10.100.0.1, our gateway)       ==veth==  ns origin
 *     netstack-driver: http.request over our TCP
 *
 *   node bin/run-ts.js bench/netstack.ts [--size-mb 100] [--runs 3] [--loss 0.01] [--profile DIR] [--dgram]
 *   node bin/run-ts.js bench/netstack.ts --help
 *
 * --dgram also runs ours with its WireGuard socket on node:dgram in every round, beside the default
 * (the batched socket where it is built): the A/B of gateway/wireguard/socket.ts.
 *
 * --profile DIR writes a V8 CPU profile per run of ours (DIR/N-KIND-lossL/, one file per thread:
 * the largest is the main thread; the other is tsx's loader).
 *
 * Ours: the body is counted, not hashed (as `curl -o /dev/null`); uploads are checked by the
 * sink's SHA-256 against the file's. CPU per MB is the driver process's user+system time over the
 * transfer (process.cpuUsage()), i.e. everything our gateway process did for it: UDP, WireGuard,
 * IP, TCP and the HTTP client.
 *
 * Needs root, wireguard-go, wireguard-tools, nginx, curl, wrk. The lab is torn down at the end
 * (also on Ctrl-C).
 */
import { mkdirSync } from 'node:fs'
import { cpus, loadavg } from 'node:os'
import { join, resolve } from 'node:path'
import { runOk, wgGenKey, wgPubKey } from '../test/helpers/lab.ts'
import { runNetstackDriver, type DriverArgs, type DriverResult, type Scenario } from '../test/helpers/lab/netstack.ts'
import { writeGeneratedFile } from '../test/helpers/lab/generator.ts'
import { measureHttp, median } from './baseline/measure.ts'
import { TRANSFER_OPTIONS, withShippedOpensslCaps, isMain, numberOption, transferValues } from './baseline/cli.ts'
import type { UdpIoSetting } from '../gateway/wireguard/socket.ts'
import { labBenchArgs, withBenchLab } from './baseline/lab.ts'

export interface NetstackBenchOptions {
  sizeMB: number
  runs: number
  /** Injected datagram loss (each direction) for the lossy runs; 0 skips them. */
  loss: number
  /** Directory for --cpu-prof profiles of our runs (none when absent). */
  profileDir?: string
  /** Also run ours over node:dgram each round (the batched socket's A/B). */
  dgram?: boolean
}

export interface OurRuns {
  runsMBps: number[]
  medianMBps: number
  /** CPU ms per 10^6 bytes, each run and median. */
  cpuMsPerMB: number[]
  medianCpuMsPerMB: number
  retransmits: Array<Record<string, number>>
}

export interface NetstackBenchResults {
  bench: 'netstack'
  date: string
  machine: { cpus: number, cpuModel: string, node: string, wireguardGo: string, loadavgStart: number[], loadavgEnd: number[] }
  bytes: number
  baseline: { download: { runsMBps: number[], medianMBps: number }, upload: { runsMBps: number[], medianMBps: number } }
  ours: { download: OurRuns, upload: OurRuns }
  lossy?: { loss: number, download: OurRuns, upload: OurRuns }
  /** Ours with the WireGuard socket on node:dgram (--dgram), same rounds. */
  oursDgram?: { download: OurRuns, upload: OurRuns }
  ratios: { download: number, upload: number, lossyDownloadOfOurs?: number, lossyUploadOfOurs?: number, dgramDownload?: number, dgramUpload?: number }
  /** The WireGuard socket ours used in its default runs (batched, or dgram where the module is not built). */
  udpIo: string
}

const round = (v: number, d = 2): number => Math.round(v * 10 ** d) / 10 ** d

export async function runNetstackBench (o: NetstackBenchOptions): Promise<NetstackBenchResults> {
  const loadavgStart = loadavg().map(v => round(v))
  return await withBenchLab('netstack', async (lab, filesDir) => {
    const bytes = Math.round(o.sizeMB * 1e6)
    const bulkFile = join(filesDir, 'bulk.bin')
    const bulkSha = writeGeneratedFile(bulkFile, bytes, 1)
    writeGeneratedFile(join(filesDir, 'small.bin'), 1024, 2)

    const client = await lab.namespace('client')
    const gwNs = await lab.namespace('gw')
    const origin = await lab.namespace('origin')
    const clientLink = await lab.link(client, origin)
    const gwLink = await lab.link(gwNs, origin)
    const gatewayKey = await wgGenKey()
    const clientWg = await lab.startWireguardGo(client, { address: '10.100.0.3/32', listenPort: 51820 })
    const originWg = await lab.startWireguardGo(origin, {
      address: '10.100.0.2/32',
      listenPort: 51821,
      peers: [
        { publicKey: clientWg.publicKey, allowedIPs: ['10.100.0.3/32'], endpoint: `${clientLink.a.ip}:51820` },
        { publicKey: await wgPubKey(gatewayKey), allowedIPs: ['10.100.0.1/32'], endpoint: `${gwLink.a.ip}:51820` },
      ],
    })
    await clientWg.setPeer({ publicKey: originWg.publicKey, allowedIPs: ['10.100.0.2/32'], endpoint: `${clientLink.b.ip}:51821` })
    await lab.startNginx(origin, { root: filesDir, listen: '0.0.0.0:80' })
    await lab.startHttpSink(origin, '0.0.0.0:8080')

    const driverArgs = (scenario: Scenario, loss: number, seed: number, udpIo: UdpIoSetting): DriverArgs => ({
      gateway: {
        privateKey: gatewayKey,
        udpIo,
        listenPort: 51820,
        address: '10.100.0.1',
        peers: [{ publicKey: originWg.publicKey, allowedIPs: ['10.100.0.2/32'], endpoint: `${gwLink.b.ip}:51821`, persistentKeepalive: 25 }],
        ...(loss > 0 ? { faults: { seed, drop: loss } } : {}),
      },
      scenario,
      timeLimitMs: 300_000,
      settleMs: 0,
    })
    let profileRun = 0
    let udpIo = 'unknown'
    const ourRun = async (kind: 'download' | 'upload', loss: number, i: number, io: UdpIoSetting = 'auto'): Promise<DriverResult> => {
      const scenario: Scenario = kind === 'download'
        ? { kind, host: '10.100.0.2', port: 80, path: '/bulk.bin', hash: false }
        : { kind, host: '10.100.0.2', port: 8080, path: '/sink', file: bulkFile, hash: false }
      const nodeArgs = o.profileDir !== undefined
        ? ['--cpu-prof', '--cpu-prof-dir', join(o.profileDir, `${profileRun++}-${kind}-loss${loss}`)]
        : []
      const r = await runNetstackDriver(lab, gwNs, driverArgs(scenario, loss, 1000 + i, io), nodeArgs)
      if (!r.ok || r.bytes !== bytes) throw new Error(`our ${kind} (loss ${loss}) failed: ${JSON.stringify(r.errors)} (${r.bytes} bytes)`)
      if (kind === 'upload' && r.remote?.sha256 !== bulkSha) throw new Error(`our upload arrived corrupted: ${JSON.stringify(r.remote)}`)
      if (io === 'auto') udpIo = r.udp?.io ?? 'unknown'
      const calls = r.udp?.stats !== undefined && r.udp.stats !== null
        ? ` (${r.udp.stats.sendDatagrams} datagrams in ${r.udp.stats.sendCalls} sends, ${r.udp.stats.recvDatagrams} in ${r.udp.stats.recvCalls} reads)`
        : ''
      process.stderr.write(`  ours [${r.udp?.io ?? io}] ${kind} loss=${loss}: ${r.mbps} MB/s, ${r.cpu.msPerMB} CPU ms/MB${calls}\n`)
      return r
    }
    const summarize = (runs: DriverResult[]): OurRuns => {
      const mbps = runs.map(r => r.mbps)
      const cpu = runs.map(r => r.cpu.msPerMB)
      return {
        runsMBps: mbps,
        medianMBps: median(mbps),
        cpuMsPerMB: cpu,
        medianCpuMsPerMB: median(cpu),
        retransmits: runs.map(r => Object.fromEntries(Object.entries(r.tcp?.retransmits ?? {}).filter(([, v]) => v > 0))),
      }
    }

    // Interleaved, one round at a time (baseline, ours, ours with loss), so that changes in the
    // machine's load hit every figure alike.
    const base = { download: [] as number[], upload: [] as number[] }
    const runs = {
      download: [] as DriverResult[], upload: [] as DriverResult[], lossyDownload: [] as DriverResult[], lossyUpload: [] as DriverResult[],
      dgramDownload: [] as DriverResult[], dgramUpload: [] as DriverResult[],
    }
    for (let i = 0; i < o.runs; i++) {
      process.stderr.write(`round ${i + 1}/${o.runs}: baseline (wireguard-go <-> wireguard-go, Linux TCP both ends)...\n`)
      const b = await measureHttp(lab, client, {
        download: 'http://10.100.0.2/bulk.bin', upload: 'http://10.100.0.2:8080/sink', small: 'http://10.100.0.2/small.bin',
      }, { bulkFile, bulkBytes: bytes, runs: 1, wrkSeconds: 1, wrkConnections: 4 })
      base.download.push(b.download.medianMBps)
      base.upload.push(b.upload.medianMBps)
      process.stderr.write(`  baseline download ${b.download.medianMBps} MB/s, upload ${b.upload.medianMBps} MB/s\n`)
      runs.download.push(await ourRun('download', 0, i))
      runs.upload.push(await ourRun('upload', 0, i))
      if (o.dgram === true) {
        runs.dgramDownload.push(await ourRun('download', 0, i, 'dgram'))
        runs.dgramUpload.push(await ourRun('upload', 0, i, 'dgram'))
      }
      if (o.loss > 0) {
        runs.lossyDownload.push(await ourRun('download', o.loss, i))
        runs.lossyUpload.push(await ourRun('upload', o.loss, i))
      }
    }
    const baseline = {
      download: { runsMBps: base.download, medianMBps: median(base.download) },
      upload: { runsMBps: base.upload, medianMBps: median(base.upload) },
    }
    const ourDownload = summarize(runs.download)
    const ourUpload = summarize(runs.upload)
    const lossy: NetstackBenchResults['lossy'] = o.loss > 0
      ? { loss: o.loss, download: summarize(runs.lossyDownload), upload: summarize(runs.lossyUpload) }
      : undefined
    const oursDgram = o.dgram === true ? { download: summarize(runs.dgramDownload), upload: summarize(runs.dgramUpload) } : undefined
    const wgVersion = (await runOk('wireguard-go', ['--version'])).split('\n')[0].trim()
    return {
      bench: 'netstack',
      date: new Date().toISOString(),
      machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model ?? 'unknown', node: process.version, wireguardGo: wgVersion, loadavgStart, loadavgEnd: loadavg().map(v => round(v)) },
      bytes,
      baseline,
      ours: { download: ourDownload, upload: ourUpload },
      ...(lossy !== undefined ? { lossy } : {}),
      ...(oursDgram !== undefined ? { oursDgram } : {}),
      udpIo,
      ratios: {
        download: round(ourDownload.medianMBps / baseline.download.medianMBps),
        upload: round(ourUpload.medianMBps / baseline.upload.medianMBps),
        ...(lossy !== undefined
          ? {
              lossyDownloadOfOurs: round(lossy.download.medianMBps / ourDownload.medianMBps),
              lossyUploadOfOurs: round(lossy.upload.medianMBps / ourUpload.medianMBps),
            }
          : {}),
        ...(oursDgram !== undefined
          ? {
              dgramDownload: round(oursDgram.download.medianMBps / baseline.download.medianMBps),
              dgramUpload: round(oursDgram.upload.medianMBps / baseline.upload.medianMBps),
            }
          : {}),
      },
    }
  })
}

const SPEC = {
  name: 'bench/netstack.ts',
  about: `Userspace TCP: single-connection bulk download and upload (MB/s, CPU ms per MB) between our
gateway's netstack (WireGuard + IPv4 + TCP in one node process) and a wireguard-go peer, against
wireguard-go + Linux TCP on both ends, same file and origin, interleaved in one run; then ours with
datagram loss injected each way. JSON on stdout, progress on stderr; about 3 minutes.

Needs root (network namespaces), wireguard-go, wireguard-tools, nginx, curl, wrk. The lab is torn
down at the end, also on Ctrl-C.`,
  options: {
    ...TRANSFER_OPTIONS,
    loss: { type: 'string', default: '0.01', value: 'P', help: 'datagram loss each way for the lossy runs of ours, 0-0.2; 0 skips them' },
    profile: { type: 'string', value: 'DIR', help: 'write a V8 CPU profile of each run of ours in DIR/N-KIND-lossL/ (default: none)' },
    dgram: { type: 'boolean', default: false, help: 'also run ours with its WireGuard socket on node:dgram each round (A/B of the batched socket)' },
  },
} as const

if (isMain(import.meta.url)) {
  const options = labBenchArgs(SPEC, (values): NetstackBenchOptions => ({
    ...transferValues(values),
    loss: numberOption('loss', values.loss, 0, 0.2),
    dgram: values.dgram === true,
    ...(values.profile !== undefined ? { profileDir: resolve(values.profile) } : {}),
  }))
  const opensslCaps = withShippedOpensslCaps()
  if (options.profileDir !== undefined) mkdirSync(options.profileDir, { recursive: true })
  const results = await runNetstackBench(options)
  process.stdout.write(JSON.stringify({ ...results, opensslCaps }, null, 2) + '\n')
}
