/**
 * The restart curve of bench/scale.ts: a gateway with N peers, all of them driven by bench/wg-peers.ts
 * in a process of its own (real handshakes and ICMP echoes over loopback UDP), then SIGKILL and the
 * same command, config and data directory started again: how long until every peer has handshaken
 * again and had an echo answered through the tunnel.
 *
 * The peers start their new handshake when the gateway is started again (as if each had noticed at
 * once; wireguard-go notices after KEEPALIVE_TIMEOUT + REKEY_TIMEOUT without an answer, up to 15 s,
 * which this leaves out: it measures the gateway, not the peers' detection). What the gateway has
 * not read yet when they start (its UDP socket is not bound until its config is loaded) is sent
 * again on wireguard-go's retransmission timer. The restarted gateway also initiates to every peer
 * at the endpoint it kept in its data directory (gateway/wireguard/resume.ts); the peers answer.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import { onExitCleanup } from '../test/helpers/lab.ts'
import { round2 } from './baseline/cli.ts'
import { encodeKey, generatePrivateKey, publicKeyFromPrivate } from '../proto/noise/index.ts'
import { accepts, exited, failure, freePort, freeUdpPort, memoryMB, startGateway, stopGateway, type Gateway } from './scale-gateway.ts'
import { cpuSeconds } from './baseline/proc.ts'
import { peerTunnelAddress, type PeersOptions, type UpResult } from './wg-peers.ts'

const ROOT = resolve(fileURLToPath(import.meta.url), '../..')
const GATEWAY_ADDRESS = '10.100.0.1'

export interface RestartRun {
  count: number
  /** First start: every peer handshaken and answered (ms from the command to the peers). */
  firstUpMs: number | null
  /** RSS of the gateway with every peer's session up, and per peer against `baseRssMB`. */
  rssUpMB: number
  /** After SIGKILL and start: spawn -> HTTPS listener accepts. */
  restartListeningS: number | null
  /** Spawn -> first / half / 99 % / every peer answered again. */
  restartFirstS: number | null
  restartP50S: number | null
  restartP99S: number | null
  restartAllS: number | null
  passed: number
  initiations: number
  cookieReplies: number
  /** The gateway's initiations the peers answered after the restart. */
  responses: number
  /** CPU the restarted gateway spent until every peer was back. */
  restartCpuS: number
  /** CPU the load generator spent on the same (the peers' half of every handshake, on the same cores). */
  peersCpuS: number
}

/** The load generator in its own process, spoken to in JSON lines. */
class PeerProcess {
  private readonly child: ChildProcess
  private readonly lines: string[] = []
  private waiting: ((line: string | null) => void) | null = null
  private closed = false

  constructor (optionsFile: string) {
    // Niced: on a machine of its own the gateway would not share its cores with its peers.
    this.child = spawn('nice', ['-n', '10', process.execPath, join(ROOT, 'bin/run-ts.js'), join(ROOT, 'bench/wg-peers.ts'), optionsFile], { stdio: ['pipe', 'pipe', 'inherit'] })
    createInterface({ input: this.child.stdout! }).on('line', line => {
      if (this.waiting !== null) { const w = this.waiting; this.waiting = null; w(line) } else this.lines.push(line)
    })
    this.child.once('exit', () => { this.closed = true; this.waiting?.(null) })
  }

  async next (): Promise<Record<string, unknown>> {
    const line = this.lines.shift() ?? (this.closed ? null : await new Promise<string | null>(resolve => { this.waiting = resolve }))
    if (line === null) throw new Error('the peer process exited')
    return JSON.parse(line) as Record<string, unknown>
  }

  send (command: string): void { this.child.stdin!.write(JSON.stringify({ command }) + '\n') }

  kill (): void { if (!this.closed) this.child.kill('SIGKILL') }
}

export interface RestartSetup { dir: string, configFile: string, peersFile: string, httpsPort: number }

/** Writes the gateway's config (N peers, a fixed UDP port) and the load generator's options. */
export async function writeRestartSetup (dir: string, count: number, limitMs: number): Promise<RestartSetup> {
  const httpsPort = await freePort()
  const udpPort = await freeUdpPort()
  const gatewayKey = generatePrivateKey()
  const peerKeys = Array.from({ length: count }, () => generatePrivateKey())
  const config = {
    privateKey: encodeKey(gatewayKey),
    listenPort: udpPort,
    listenAddress: '127.0.0.1',
    address: GATEWAY_ADDRESS,
    peers: peerKeys.map((k, i) => ({ publicKey: encodeKey(publicKeyFromPrivate(k)), allowedIPs: [`${peerTunnelAddress(i)}/32`], name: `p${i}` })),
    edge: { dataDir: join(dir, 'data'), httpsListen: `127.0.0.1:${httpsPort}`, httpListen: null },
  }
  const configFile = join(dir, 'gateway.json')
  writeFileSync(configFile, JSON.stringify(config))
  const peers: PeersOptions = {
    target: `127.0.0.1:${udpPort}`,
    serverPublicKey: encodeKey(publicKeyFromPrivate(gatewayKey)),
    gatewayAddress: GATEWAY_ADDRESS,
    peers: peerKeys.map((k, i) => ({ privateKey: encodeKey(k), address: peerTunnelAddress(i) })),
    limitMs,
  }
  const peersFile = join(dir, 'peers.json')
  writeFileSync(peersFile, JSON.stringify(peers))
  return { dir, configFile, peersFile, httpsPort }
}

export async function measureRestart (count: number, timeoutS: number, gatewayEnv: Record<string, string> = {}): Promise<RestartRun> {
  const dir = mkdtempSync(join(tmpdir(), 'cc-bench-restart-'))
  let g: Gateway | undefined
  let peers: PeerProcess | undefined
  const unregister = onExitCleanup(() => {
    g?.child.kill('SIGKILL')
    peers?.kill()
    rmSync(dir, { recursive: true, force: true })
  })
  try {
    const setup = await writeRestartSetup(dir, count, timeoutS * 1000)
    g = startGateway(dir, setup.configFile, setup.httpsPort, gatewayEnv)
    const deadline = performance.now() + timeoutS * 1000
    while (!await accepts(setup.httpsPort)) {
      if (exited(g) || performance.now() > deadline) throw failure(g, 'no HTTPS listener')
      await sleep(20)
    }
    peers = new PeerProcess(setup.peersFile)
    await peers.next() // ready
    peers.send('up')
    const first = await peers.next() as unknown as UpResult
    if (first.passed !== count) throw failure(g, `only ${first.passed} of ${count} peers passed before the restart`)
    // Past the gateway's batched write of its peers' endpoints (2 s after the first change).
    await sleep(3_000)
    const rssUpMB = round2(memoryMB(g.child.pid!).rss)

    g.child.kill('SIGKILL')
    await new Promise(resolve => { if (exited(g!)) resolve(null); else g!.child.once('exit', resolve) })
    const started = performance.now()
    g = startGateway(dir, setup.configFile, setup.httpsPort, gatewayEnv)
    peers.send('up')
    const restarted = g
    let restartListeningS: number | null = null
    const listening = (async () => {
      while (!exited(restarted) && performance.now() < deadline + 60_000) {
        if (await accepts(setup.httpsPort)) { restartListeningS = round2((performance.now() - started) / 1000); return }
        await sleep(20)
      }
    })()
    const again = await peers.next() as unknown as UpResult
    await listening
    const restartCpuS = exited(g) ? NaN : round2(cpuSeconds(g.child.pid!))
    const s = (ms: number | null): number | null => ms === null ? null : round2(ms / 1000)
    return {
      count,
      firstUpMs: first.allMs,
      rssUpMB,
      restartListeningS,
      restartFirstS: s(again.firstMs),
      restartP50S: s(again.p50Ms),
      restartP99S: s(again.p99Ms),
      restartAllS: s(again.allMs),
      passed: again.passed,
      initiations: again.initiations,
      cookieReplies: again.cookieReplies,
      responses: again.responses,
      restartCpuS,
      peersCpuS: again.cpuS,
    }
  } finally {
    if (peers !== undefined) { peers.send('exit'); setTimeout(() => peers?.kill(), 5_000).unref() }
    if (g !== undefined) await stopGateway(g)
    rmSync(dir, { recursive: true, force: true })
    unregister()
  }
}
