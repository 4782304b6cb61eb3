/**
 * DNS servers for custom-domain tests, on loopback ports chosen at start.
 *
 * - ChallTestSrv: Debian's pebble-challtestsrv (a real DNS server, UDP and TCP), records set over
 *   its management HTTP API (/set-cname, /set-txt, /add-a, /add-aaaa and the /clear-* ones).
 *   Started with no default A/AAAA answers, so unknown names have no records. It never answers
 *   NXDOMAIN, hence:
 * - TinyDns: a small UDP server over dns-packet with a record table that answers NXDOMAIN for
 *   unknown names, and can be told to answer SERVFAIL or nothing at all (timeouts).
 */
import type { Test } from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { createSocket, type Socket } from 'node:dgram'
import dnsPacket from 'dns-packet'
import { freePort } from './ports.ts'

const CHALLTESTSRV = 'pebble-challtestsrv'

function fqdn (name: string): string {
  return name.endsWith('.') ? name : `${name}.`
}

export class ChallTestSrv {
  readonly #process: ChildProcess
  readonly dnsPort: number
  readonly #management: string

  private constructor (child: ChildProcess, dnsPort: number, managementPort: number) {
    this.#process = child
    this.dnsPort = dnsPort
    this.#management = `http://127.0.0.1:${managementPort}`
  }

  /** `127.0.0.1:<port>`, for CC_DNS_RESOLVERS. */
  get server (): string {
    return `127.0.0.1:${this.dnsPort}`
  }

  static async start (t: Test): Promise<ChallTestSrv> {
    const dnsPort = await freePort({ udp: true })
    const managementPort = await freePort({ udp: true })
    const child = spawn(CHALLTESTSRV, [
      '-dns01', `127.0.0.1:${dnsPort}`, '-management', `127.0.0.1:${managementPort}`,
      '-http01', '', '-https01', '', '-tlsalpn01', '', '-defaultIPv4', '', '-defaultIPv6', '',
    ], { stdio: ['ignore', 'pipe', 'pipe'] })
    let output = ''
    child.stdout?.on('data', (chunk: Buffer) => { output += chunk.toString() })
    child.stderr?.on('data', (chunk: Buffer) => { output += chunk.toString() })
    const exited = new Promise<void>(resolve => child.once('exit', () => { resolve() }))
    const spawnError = new Promise<Error>(resolve => child.once('error', resolve))
    t.teardown(async () => {
      if (child.exitCode === null) child.kill('SIGTERM')
      await exited
    })
    const srv = new ChallTestSrv(child, dnsPort, managementPort)
    const deadline = Date.now() + 10_000
    while (Date.now() < deadline) {
      const failed = await Promise.race([spawnError, new Promise<undefined>(resolve => setTimeout(() => { resolve(undefined) }, 100))])
      if (failed !== undefined) throw new Error(`${CHALLTESTSRV} could not start (install Debian's pebble package): ${failed.message}`)
      if (child.exitCode !== null) throw new Error(`${CHALLTESTSRV} exited: ${output}`)
      if (output.includes('Starting management server')) {
        try {
          await srv.#post('/clear-txt', { host: 'ready.invalid.' })
          return srv
        } catch {}
      }
    }
    throw new Error(`${CHALLTESTSRV} did not become ready: ${output}`)
  }

  async #post (path: string, body: unknown): Promise<void> {
    const res = await fetch(`${this.#management}${path}`, { method: 'POST', body: JSON.stringify(body) })
    if (res.status !== 200) throw new Error(`${CHALLTESTSRV} ${path}: ${res.status} ${await res.text()}`)
  }

  async setCname (host: string, target: string): Promise<void> { await this.#post('/set-cname', { host: fqdn(host), target: fqdn(target) }) }
  async clearCname (host: string): Promise<void> { await this.#post('/clear-cname', { host: fqdn(host) }) }
  async setTxt (host: string, value: string): Promise<void> { await this.#post('/set-txt', { host: fqdn(host), value }) }
  async clearTxt (host: string): Promise<void> { await this.#post('/clear-txt', { host: fqdn(host) }) }
  async addA (host: string, addresses: string[]): Promise<void> { await this.#post('/add-a', { host: fqdn(host), addresses }) }
  async clearA (host: string): Promise<void> { await this.#post('/clear-a', { host: fqdn(host) }) }
  async addAaaa (host: string, addresses: string[]): Promise<void> { await this.#post('/add-aaaa', { host: fqdn(host), addresses }) }
  async clearAaaa (host: string): Promise<void> { await this.#post('/clear-aaaa', { host: fqdn(host) }) }
}

export interface TinyRecords {
  A?: string[]
  AAAA?: string[]
  CNAME?: string
  TXT?: string[]
}

export type TinyMode = 'answer' | 'servfail' | 'silent'

export class TinyDns {
  readonly records = new Map<string, TinyRecords>()
  mode: TinyMode = 'answer'
  /** Queries received (name and type), for assertions. */
  readonly queries: Array<{ name: string, type: string }> = []
  readonly #socket: Socket
  port = 0

  private constructor () {
    this.#socket = createSocket('udp4')
    this.#socket.on('message', (message, remote) => { this.#answer(message, remote.address, remote.port) })
  }

  get server (): string {
    return `127.0.0.1:${this.port}`
  }

  static async start (t: Test): Promise<TinyDns> {
    const dns = new TinyDns()
    await new Promise<void>(resolve => dns.#socket.bind(0, '127.0.0.1', () => { resolve() }))
    dns.port = dns.#socket.address().port
    t.teardown(async () => { await new Promise<void>(resolve => dns.#socket.close(() => { resolve() })) })
    return dns
  }

  set (name: string, records: TinyRecords): void {
    this.records.set(name.toLowerCase().replace(/\.$/, ''), records)
  }

  #answer (message: Buffer, address: string, port: number): void {
    let query: dnsPacket.Packet
    try {
      query = dnsPacket.decode(message)
    } catch {
      return
    }
    const question = query.questions?.[0]
    if (question === undefined) return
    this.queries.push({ name: question.name, type: question.type })
    if (this.mode === 'silent') return
    const reply: dnsPacket.Packet = { id: query.id, type: 'response', flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE, questions: [question], answers: [] }
    const known = this.records.get(question.name.toLowerCase())
    if (this.mode === 'servfail') {
      reply.flags = (reply.flags ?? 0) | 2 // RCODE 2: SERVFAIL (RFC 1035 4.1.1)
    } else if (known === undefined) {
      reply.flags = (reply.flags ?? 0) | 3 // RCODE 3: NXDOMAIN
    } else {
      const base = { name: question.name, ttl: 60, class: 'IN' as const }
      if (question.type === 'A') for (const a of known.A ?? []) reply.answers!.push({ ...base, type: 'A', data: a })
      if (question.type === 'AAAA') for (const a of known.AAAA ?? []) reply.answers!.push({ ...base, type: 'AAAA', data: a })
      if (question.type === 'CNAME' && known.CNAME !== undefined) reply.answers!.push({ ...base, type: 'CNAME', data: known.CNAME })
      if (question.type === 'TXT') for (const txt of known.TXT ?? []) reply.answers!.push({ ...base, type: 'TXT', data: [txt] })
    }
    this.#socket.send(dnsPacket.encode(reply), port, address)
  }
}
