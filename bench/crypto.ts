/**
 * WireGuard crypto throughput on one core: transport seal + open of 1420-byte packets per AEAD
 * backend, and responder handshakes (mac1 check + consumeInitiation + createResponse + mac1 of the
 * response) per X25519 backend. Bounded in count and time. Run: node bin/run-ts.js bench/crypto.ts
 * It runs with the OPENSSL_ia32cap the gateway ships with unless one is set: `OPENSSL_ia32cap=:~0
 * node bin/run-ts.js bench/crypto.ts` measures OpenSSL with every CPU path it detects.
 */
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { cpus, hostname, loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads'
import {
  type AeadBackend, type StaticIdentity, type X25519Backend, CookieGenerator, ReplayWindow, REJECT_AFTER_MESSAGES,
  consumeInitiation, createInitiation, createResponse, generatePrivateKey, mac1Key, nodeAead, nodeX25519,
  defaultAead, nativeAead, nativeAeadUnavailable, openTransportMessage, publicKeyFromPrivate, sealTransport, sealTransportInto, setX25519Backend, transportMessageLength, sodiumAead, sodiumX25519, verifyMac1, writeMac1,
} from '../proto/noise/index.ts'
import { aeadDecrypt, aeadEncrypt, aeadPath } from '../proto/noise/sodium.ts'
import { numberSetting, parseBenchArgs, withShippedOpensslCaps } from './baseline/cli.ts'

const PACKET_SIZE = 1420

const SPEC = {
  name: 'bench/crypto.ts',
  about: `WireGuard crypto on one core: transport seal + open of 1420-byte packets per AEAD backend
(OpenSSL through the native module, sodium-native, node:crypto) with libsodium and OpenSSL-from-C
references, all in interleaved rounds; the same on every core at once; responder handshakes per
X25519 backend. Prints a Markdown table. Targets: >= 250,000 packets/s and >= 3,000 handshakes/s.
The C reference needs cc and libssl-dev (its row says why when it cannot run); not root.`,
  options: {},
  env: {
    BENCH_MS: 'milliseconds of each round, 100-10000 (default 1000)',
    BENCH_ROUNDS: 'rounds of each figure, 1-50 (default 5)',
    OPENSSL_ia32cap: 'kept when set (:~0 = every CPU path OpenSSL detects); else the shipped :~0x10000',
  },
} as const

/** ROUNDS rounds of TIME_BUDGET_MS for each figure. */
const { TIME_BUDGET_MS, ROUNDS } = isMainThread
  ? parseBenchArgs(SPEC, () => ({
    TIME_BUDGET_MS: numberSetting('BENCH_MS', process.env.BENCH_MS ?? '1000', 100, 10_000),
    ROUNDS: numberSetting('BENCH_ROUNDS', process.env.BENCH_ROUNDS ?? '5', 1, 50),
  }))
  : { TIME_BUDGET_MS: 0, ROUNDS: 0 }

function identity (): StaticIdentity {
  const privateKey = generatePrivateKey()
  return { privateKey, publicKey: publicKeyFromPrivate(privateKey) }
}

interface Rate {
  /** Operations per second of process CPU time, best round: what one core does when it is not shared. */
  cpu: number
  /** Operations per wall-clock second, best round. */
  wall: number
  /** Median over rounds of the per-CPU-second rate. */
  median: number
}

/**
 * Rounds of `step`, run in batches until the time budget or `maxCount` is reached, after a warm-up.
 * The machine is shared, so rates are given per second of CPU time this process used
 * (process.cpuUsage) as well as per wall-clock second. Rows compared with each other take their
 * rounds in turn (interleave), so a slow spell of this VM's vCPUs falls on all of them alike.
 */
class Meter {
  private readonly cpuRates: number[] = []
  private wall = 0

  constructor (private readonly maxCount: number, private readonly batch: number, private readonly step: (i: number) => void) {
    for (let i = 0; i < Math.min(batch, maxCount); i++) step(i) // warm-up
  }

  round (): void {
    let done = 0
    const start = performance.now()
    const cpuStart = process.cpuUsage()
    while (done < this.maxCount && performance.now() - start < TIME_BUDGET_MS) {
      for (let i = 0; i < this.batch; i++) this.step(done + i)
      done += this.batch
    }
    const used = process.cpuUsage(cpuStart)
    this.record(done / ((used.user + used.system) / 1e6), done / ((performance.now() - start) / 1000))
  }

  record (cpuRate: number, wallRate: number): void {
    this.cpuRates.push(cpuRate)
    this.wall = Math.max(this.wall, wallRate)
  }

  rate (): Rate {
    const sorted = [...this.cpuRates].sort((a, b) => a - b)
    return { cpu: sorted[sorted.length - 1]!, wall: this.wall, median: sorted[Math.floor(sorted.length / 2)]! }
  }
}

/** ROUNDS rounds of every meter, in turn. */
function interleave (meters: Array<{ round (): void }>): void {
  for (let round = 0; round < ROUNDS; round++) for (const m of meters) m.round()
}

function measure (maxCount: number, batch: number, step: (i: number) => void): Rate {
  const meter = new Meter(maxCount, batch, step)
  interleave([meter])
  return meter.rate()
}

/**
 * seal + open per packet. 'new buffer': sealTransport allocates each message and copies the packet in;
 * 'in place': the packet sits with 16 bytes of headroom in a reused buffer (sealTransportInto).
 * Both open the whole message in place with openTransportMessage, as the device does a datagram.
 */
function transport (aead: AeadBackend, withReplay: boolean, inPlace = false): Meter {
  const key = Buffer.alloc(32, 7)
  const packet = Buffer.alloc(PACKET_SIZE, 0x45)
  const frame = Buffer.alloc(transportMessageLength(PACKET_SIZE))
  const window = new ReplayWindow()
  let next = 0
  return new Meter(5_000_000, 1000, () => {
    const counter = BigInt(next++)
    let message: Buffer
    if (inPlace) {
      frame.fill(0x45, 16, 16 + PACKET_SIZE) // the next packet arrives in the headroom buffer
      sealTransportInto(aead, key, 1, counter, frame.subarray(16, 16 + PACKET_SIZE), frame, 0)
      message = frame
    } else {
      message = sealTransport(aead, key, 1, counter, packet)
    }
    const plain = openTransportMessage(aead, key, counter, message) // as the device opens a datagram
    if (plain < 0 || (withReplay && !window.checkAndUpdate(counter, REJECT_AFTER_MESSAGES))) {
      throw new Error(`${aead.name}: packet ${counter} failed to open`)
    }
  })
}

/** Reference ceiling: the two libsodium calls alone on preallocated buffers, no message framing. */
function rawLibsodium (): Meter {
  const key = Buffer.alloc(32, 7)
  const nonce = Buffer.alloc(12)
  const plaintext = Buffer.alloc(PACKET_SIZE + 4, 0x45) // padded to 16 like a transport packet
  const sealed = Buffer.alloc(plaintext.length + 16)
  const opened = Buffer.alloc(plaintext.length)
  return new Meter(5_000_000, 1000, i => {
    nonce.writeUInt32LE(i, 4)
    aeadEncrypt(sealed, plaintext, null, nonce, key)
    if (aeadDecrypt(opened, sealed, null, nonce, key) < 0) throw new Error('raw libsodium round trip failed')
  })
}

/** A row measured by a program outside Node: each round is one run of it (see opensslFromC). */
class ProgramMeter extends Meter {
  constructor (private readonly exe: string) {
    super(0, 0, () => {})
  }

  override round (): void {
    const r = JSON.parse(execFileSync(this.exe, ['1', String(TIME_BUDGET_MS)], { encoding: 'utf8' })) as Rate
    this.record(r.cpu, r.wall)
  }
}

/**
 * Reference ceiling from outside Node: bench/baseline/openssl-aead.c, compiled against the system
 * OpenSSL (needs cc and libssl-dev). When it cannot be built, the reason instead.
 */
function opensslFromC (dir: string): Meter | string {
  const exe = join(dir, 'openssl-aead')
  try {
    execFileSync('cc', ['-O2', '-o', exe, fileURLToPath(new URL('./baseline/openssl-aead.c', import.meta.url)), '-lcrypto'], { stdio: ['ignore', 'ignore', 'pipe'] })
  } catch (err) {
    return `not run: cannot compile: ${String((err as { stderr?: Buffer }).stderr ?? (err as Error).message).trim().split('\n')[0]}`
  }
  return new ProgramMeter(exe)
}

function handshakes (backend: X25519Backend, distinctPeers: boolean): Rate {
  const responder = identity()
  const key = mac1Key(responder.publicKey)
  const count = 4000
  const initiator = identity()
  const messages: Buffer[] = []
  for (let i = 0; i < count; i++) {
    const from = distinctPeers ? identity() : initiator
    const { message } = createInitiation(from, responder.publicKey, null, i, Date.now())
    new CookieGenerator(responder.publicKey).addMacs(message, 0)
    messages.push(message)
  }
  const previous = setX25519Backend(backend)
  try {
    let failures = 0
    const rate = measure(1e9, 50, i => {
      const message = messages[i % count]
      if (!verifyMac1(message, key)) { failures++; return }
      const consumed = consumeInitiation(responder, message)
      if (consumed === null) { failures++; return }
      const { message: response } = createResponse(consumed.handshake, null, i)
      writeMac1(response, mac1Key(consumed.remoteStatic))
    })
    if (failures > 0) throw new Error(`${failures} handshakes failed`)
    return rate
  } finally {
    setX25519Backend(previous)
  }
}

/**
 * What both cores do together: one worker thread per CPU, each sealing and opening in place (as
 * the single-thread row) for `ms`, started together. Reported per wall-clock second, summed: the
 * ceiling of a data path that spreads crypto over worker threads, which ours does not do yet.
 */
async function transportOnAllCores (threads: number, ms: number): Promise<{ total: number, perThread: number[] }> {
  // A worker does not inherit the TypeScript loader: it registers tsx, then loads this file.
  const boot = `import(${JSON.stringify(import.meta.resolve('tsx/esm/api'))}).then(m => { m.register(); return import(${JSON.stringify(import.meta.url)}) })`
  const workers = Array.from({ length: threads }, () => new Worker(boot, { eval: true, workerData: { ms } }))
  const counts = await Promise.all(workers.map(async w => await new Promise<number>((resolve, reject) => {
    w.once('message', (m: { packets: number, wallMs: number }) => { resolve(m.packets / (m.wallMs / 1000)) })
    w.once('error', reject)
  })))
  await Promise.all(workers.map(async w => await w.terminate()))
  return { total: counts.reduce((a, b) => a + b, 0), perThread: counts }
}

function workerMain (ms: number): void {
  const key = Buffer.alloc(32, 7)
  const frame = Buffer.alloc(transportMessageLength(PACKET_SIZE))
  let failures = 0
  let packets = 0
  const start = performance.now()
  while (performance.now() - start < ms) {
    for (let i = 0; i < 1000; i++, packets++) {
      frame.fill(0x45, 16, 16 + PACKET_SIZE)
      sealTransportInto(defaultAead, key, 1, BigInt(packets), frame.subarray(16, 16 + PACKET_SIZE), frame, 0)
      if (openTransportMessage(defaultAead, key, BigInt(packets), frame) < 0) failures++
    }
  }
  if (failures > 0) throw new Error(`${failures} packets failed to open`)
  parentPort!.postMessage({ packets, wallMs: performance.now() - start })
}

const fmt = (n: number): string => Math.round(n).toLocaleString('en-US')
const rate = (r: Rate, unit: string): string => `${fmt(r.cpu)} ${unit} | ${fmt(r.median)} | ${fmt(r.wall)}`
const cpu = cpus()[0]?.model ?? 'unknown cpu'

if (!isMainThread) {
  workerMain((workerData as { ms: number }).ms)
} else {
  const opensslCaps = withShippedOpensslCaps()
  console.log(`WireGuard crypto bench ${new Date().toISOString()} on ${hostname()} (${cpus().length} x ${cpu}), node ${process.version}, OPENSSL_ia32cap=${opensslCaps}, load average ${loadavg().map(l => l.toFixed(2)).join(' ')}`)
  console.log('| what | backend | per CPU-second, best round | median round | per wall-clock second, best round |')
  console.log('|---|---|---|---|---|')
  if (nativeAead === null) console.log(`(the OpenSSL backend is ${nativeAeadUnavailable ?? 'unavailable'}: run node bin/build-native.mjs)`)
  const fast = [nativeAead, sodiumAead].filter((a): a is AeadBackend => a !== null)
  const scratch = mkdtempSync(join(tmpdir(), 'cc-crypto-bench-'))
  try {
    const openssl = opensslFromC(scratch)
    const rows: Array<[string, string, Meter | string]> = [
      ...[...fast, nodeAead].map(a => [`transport seal + open, ${PACKET_SIZE} B, new buffer per message`, `AEAD ${a.name}`, transport(a, false)] as [string, string, Meter]),
      ...fast.map(a => [`transport seal + open, ${PACKET_SIZE} B, in place (16 B headroom, reused buffer)`, `AEAD ${a.name}`, transport(a, false, true)] as [string, string, Meter]),
      ...fast.map(a => [`transport seal + open + replay window, ${PACKET_SIZE} B`, `AEAD ${a.name}`, transport(a, true)] as [string, string, Meter]),
      [`reference: libsodium seal + open alone (${aeadPath}), ${PACKET_SIZE + 4} B, no framing`, 'libsodium', rawLibsodium()],
      [`reference: OpenSSL EVP seal + open from C, no JavaScript (bench/baseline/openssl-aead.c), ${PACKET_SIZE + 4} B`, 'OpenSSL', openssl],
    ]
    interleave(rows.map(r => r[2]).filter((m): m is Meter => typeof m !== 'string'))
    for (const [what, backend, m] of rows) {
      console.log(`| ${what} | ${backend} | ${typeof m === 'string' ? `- (${m}) | - | -` : rate(m.rate(), 'packets/s')} |`)
    }
  } finally {
    rmSync(scratch, { recursive: true, force: true })
  }
  const threads = cpus().length
  const together = await transportOnAllCores(threads, TIME_BUDGET_MS * 2)
  console.log(`| transport seal + open, ${PACKET_SIZE} B, in place, ${threads} worker threads at once (sum; per thread ${together.perThread.map(fmt).join(' + ')}) | AEAD ${defaultAead.name} | - | - | ${fmt(together.total)} packets/s |`)
  for (const backend of [sodiumX25519, nodeX25519]) {
    for (const distinct of [false, true]) {
      const what = `responder handshake (mac1 check + consumeInitiation + createResponse + mac1), ${distinct ? 'a new peer each time' : 'same peer again'}`
      console.log(`| ${what} | X25519 ${backend.name} | ${rate(handshakes(backend, distinct), 'handshakes/s')} |`)
    }
  }
  console.log(`load average after: ${loadavg().map(l => l.toFixed(2)).join(' ')}`)
}
