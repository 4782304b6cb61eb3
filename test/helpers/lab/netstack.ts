/**
 * Lab helpers for the userspace-TCP interop tests and benchmark: run test/helpers/netstack-driver.ts
 * (our gateway + TCP stack, in-process) inside a namespace and read its JSON events, and run the
 * Linux-side echo server / client of test/helpers/lab/tcp-peer.ts.
 */
import { join } from 'node:path'
import type { Lab } from '../lab.ts'
import type { DriverArgs, DriverResult } from '../netstack-driver.ts'
import type { LabProcess } from './process.ts'
import { REPO_ROOT } from './gateway.ts'

export type { DriverArgs, DriverResult, Scenario } from '../netstack-driver.ts'

export interface DriverEvent { event: string, [key: string]: unknown }

/** The JSON event lines (`{"event":...}`) in a driver's output, in order. */
export function driverEvents (output: string): DriverEvent[] {
  const events: DriverEvent[] = []
  for (const line of output.split('\n')) {
    if (!line.startsWith('{"event":')) continue
    try {
      events.push(JSON.parse(line) as DriverEvent)
    } catch { /* a line cut by interleaved output */ }
  }
  return events
}

export class NetstackDriver {
  readonly process: LabProcess

  constructor (lab: Lab, ns: string, args: DriverArgs, nodeArgs: string[] = []) {
    this.process = lab.spawn(ns, 'netstack-driver', process.execPath, [
      '--expose-gc', ...nodeArgs, join(REPO_ROOT, 'bin/run-ts.js'), join(REPO_ROOT, 'test/helpers/netstack-driver.ts'), JSON.stringify(args),
    ], { cwd: REPO_ROOT })
  }

  events (): DriverEvent[] {
    return driverEvents(this.process.output())
  }

  /** The first event named `name` matching `match`; rejects if the driver exits first or on timeout. */
  async waitFor (name: string, timeoutMs: number, match: (e: DriverEvent) => boolean = () => true): Promise<DriverEvent> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const e = this.events().find(x => x.event === name && match(x))
      if (e !== undefined) return e
      if (!this.process.running) throw new Error(`driver exited before "${name}":\n${this.process.output().slice(-4000)}`)
      if (Date.now() > deadline) throw new Error(`driver: no "${name}" within ${timeoutMs} ms:\n${this.process.output().slice(-4000)}`)
      await new Promise(resolve => setTimeout(resolve, 50))
    }
  }

  /** Waits for the driver to exit (killing it after `timeoutMs`) and returns its result line. */
  async result (timeoutMs: number): Promise<DriverResult> {
    const timer = setTimeout(() => { this.process.killSync() }, timeoutMs)
    await this.process.exited
    clearTimeout(timer)
    const r = this.events().find(e => e.event === 'result')
    if (r === undefined) throw new Error(`driver printed no result (exit ${JSON.stringify(this.process.exitStatus)}):\n${this.process.output().slice(-4000)}`)
    return r as unknown as DriverResult
  }
}

/** Runs one driver scenario to completion. */
export async function runNetstackDriver (lab: Lab, ns: string, args: DriverArgs, nodeArgs: string[] = []): Promise<DriverResult> {
  const d = new NetstackDriver(lab, ns, args, nodeArgs)
  return d.result((args.timeLimitMs ?? 120_000) + 30_000)
}

/** The Linux echo server (tcp-peer.ts echo-server) in `ns`; resolves once it listens. */
export async function startTcpEchoServer (lab: Lab, ns: string, listen: string): Promise<LabProcess> {
  const p = lab.spawn(ns, `tcp-echo ${listen}`, process.execPath, [join(REPO_ROOT, 'bin/run-ts.js'), join(REPO_ROOT, 'test/helpers/lab/tcp-peer.ts'), 'echo-server', listen], { cwd: REPO_ROOT })
  await p.waitForOutput(/^listening /m, 20_000)
  return p
}

export interface EchoClientResult { bytes?: number, sentSha256?: string, receivedSha256?: string, durationMs?: number, error?: string }

/** A Linux client in `ns` (tcp-peer.ts echo-client) that writes `bytes` to HOST:PORT and reads the echo. */
export async function runTcpEchoClient (lab: Lab, ns: string, host: string, port: number, bytes: number, seed: number): Promise<EchoClientResult> {
  const r = await lab.exec(ns, process.execPath, [join(REPO_ROOT, 'bin/run-ts.js'), join(REPO_ROOT, 'test/helpers/lab/tcp-peer.ts'), 'echo-client', host, String(port), String(bytes), String(seed)],
    { cwd: REPO_ROOT, timeoutMs: 150_000 })
  const line = r.stdout.trim().split('\n').pop() ?? ''
  try {
    return JSON.parse(line) as EchoClientResult
  } catch {
    return { error: `exit ${r.code}: ${(r.stderr || r.stdout).slice(-2000)}` }
  }
}
