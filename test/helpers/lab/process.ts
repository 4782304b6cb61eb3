/**
 * Child processes for the lab: one-shot commands with a time limit, and long-running processes
 * (wireguard-go, our gateway, nginx) each in a process group of its own so that stopping one
 * stops everything it started. Output is kept in a bounded tail so a chatty process (debug logs
 * under a handshake flood) cannot grow the test's memory without limit.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { setTimeout as sleep } from 'node:timers/promises'

export interface ExecResult {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
  timedOut: boolean
}

export interface ExecOptions {
  timeoutMs?: number
  input?: string | Buffer
  cwd?: string
  env?: NodeJS.ProcessEnv
  /** Bytes of stdout and of stderr kept (the head); default 16 MiB. */
  maxOutput?: number
}

/** Runs a command to completion; never rejects (a failure to start is reported as code null). */
export function run (cmd: string, args: string[], opts: ExecOptions = {}): Promise<ExecResult> {
  const timeoutMs = opts.timeoutMs ?? 30_000
  const maxOutput = opts.maxOutput ?? 16 << 20
  return new Promise(resolve => {
    let child: ChildProcess
    try {
      child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env, detached: true, stdio: ['pipe', 'pipe', 'pipe'] })
    } catch (err) {
      resolve({ code: null, signal: null, stdout: '', stderr: String(err), timedOut: false })
      return
    }
    const out: Buffer[] = []; const err: Buffer[] = []
    let outLen = 0; let errLen = 0
    child.stdout!.on('data', (b: Buffer) => { if (outLen < maxOutput) { out.push(b); outLen += b.length } })
    child.stderr!.on('data', (b: Buffer) => { if (errLen < maxOutput) { err.push(b); errLen += b.length } })
    let timedOut = false
    const timer = setTimeout(() => {
      timedOut = true
      killGroup(child.pid, 'SIGKILL')
    }, timeoutMs)
    let spawnError = ''
    child.on('error', e => { spawnError = String(e) })
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      resolve({
        code: spawnError !== '' ? null : code,
        signal,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8') + spawnError,
        timedOut,
      })
    })
    child.stdin!.on('error', () => { /* the command may exit before reading its input */ })
    child.stdin!.end(opts.input ?? '')
  })
}

/** Like run, but throws with the command line and its stderr unless it exits 0. */
export async function runOk (cmd: string, args: string[], opts: ExecOptions = {}): Promise<string> {
  const r = await run(cmd, args, opts)
  if (r.code !== 0) {
    const why = r.timedOut ? `timed out after ${opts.timeoutMs ?? 30_000} ms` : `exit ${r.code ?? r.signal}`
    throw new Error(`${cmd} ${args.join(' ')}: ${why}: ${(r.stderr || r.stdout).trim().slice(0, 2000)}`)
  }
  return r.stdout
}

export function killGroup (pid: number | undefined, signal: NodeJS.Signals): boolean {
  if (pid === undefined) return false
  try {
    process.kill(-pid, signal)
    return true
  } catch {
    return false
  }
}

const TAIL_KEEP = 512 * 1024

export interface Exit { code: number | null; signal: NodeJS.Signals | null }

/**
 * A long-running process in its own process group. It does not keep the test process alive by
 * itself (unref'd): tests await it with bounded timers, and the exit hook kills what is left.
 */
export class LabProcess {
  readonly name: string
  readonly pid: number
  readonly exited: Promise<Exit>
  private readonly child: ChildProcess
  private text = ''
  private dropped = 0
  private exit: Exit | null = null
  private readonly listeners = new Set<() => void>()

  constructor (name: string, cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}) {
    this.name = name
    this.child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] })
    if (this.child.pid === undefined) throw new Error(`${name}: could not start ${cmd}`)
    this.pid = this.child.pid
    const append = (b: Buffer): void => {
      this.text += b.toString('utf8')
      if (this.text.length > 2 * TAIL_KEEP) {
        this.dropped += this.text.length - TAIL_KEEP
        this.text = this.text.slice(-TAIL_KEEP)
      }
      for (const l of this.listeners) l()
    }
    this.child.stdout!.on('data', append)
    this.child.stderr!.on('data', append)
    this.exited = new Promise(resolve => {
      this.child.on('exit', (code, signal) => {
        this.exit = { code, signal }
        for (const l of this.listeners) l()
        resolve(this.exit)
      })
    })
    this.child.unref()
    ;(this.child.stdout as unknown as { unref?: () => void }).unref?.()
    ;(this.child.stderr as unknown as { unref?: () => void }).unref?.()
  }

  get running (): boolean { return this.exit === null }
  get exitStatus (): Exit | null { return this.exit }

  /** The last ~512 KiB of combined stdout and stderr. */
  output (): string {
    return this.dropped > 0 ? `[... ${this.dropped} chars dropped ...]\n${this.text}` : this.text
  }

  /** Resolves with the first match of `pattern` in the output; rejects on timeout or exit. */
  waitForOutput (pattern: RegExp, timeoutMs: number): Promise<RegExpMatchArray> {
    return new Promise((resolve, reject) => {
      const check = (): void => {
        const m = this.text.match(pattern)
        if (m !== null) { done(); resolve(m); return }
        if (this.exit !== null) { done(); reject(new Error(`${this.name} exited (${this.exit.code ?? this.exit.signal}) before printing ${pattern}:\n${this.output().slice(-4000)}`)) }
      }
      const timer = setTimeout(() => { done(); reject(new Error(`${this.name}: no ${pattern} within ${timeoutMs} ms:\n${this.output().slice(-4000)}`)) }, timeoutMs)
      const done = (): void => { clearTimeout(timer); this.listeners.delete(check) }
      this.listeners.add(check)
      check()
    })
  }

  /** SIGTERM to the group, SIGKILL after `graceMs`; resolves once the process has exited. */
  async stop (graceMs = 3000): Promise<Exit> {
    if (this.exit !== null) return this.exit
    killGroup(this.pid, 'SIGTERM')
    const first = await Promise.race([this.exited, sleep(graceMs, null)])
    if (first !== null) {
      killGroup(this.pid, 'SIGKILL') // anything the leader left behind in its group
      return first
    }
    killGroup(this.pid, 'SIGKILL')
    const second = await Promise.race([this.exited, sleep(5000, null)])
    if (second === null) throw new Error(`${this.name} (pid ${this.pid}) did not exit after SIGKILL`)
    return second
  }

  /** For exit hooks: no waiting possible, so straight to SIGKILL. */
  killSync (): void {
    if (this.exit === null) killGroup(this.pid, 'SIGKILL')
  }
}

/** Thrown by a waitUntil probe to stop waiting at once (e.g. the awaited process has exited). */
export class StopWaiting extends Error {
  override readonly name = 'StopWaiting'
}

/**
 * Polls `probe` until it returns a value other than undefined/false; bounded in time. Errors the
 * probe throws count as "not yet", except StopWaiting, which ends the wait with that error.
 */
export async function waitUntil<T> (what: string, probe: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs: number, intervalMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs
  let lastError: unknown
  for (;;) {
    try {
      const v = await probe()
      if (v !== undefined && v !== false) return v
    } catch (err) {
      if (err instanceof StopWaiting) throw err
      lastError = err
    }
    if (Date.now() >= deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastError !== undefined ? `: ${String(lastError)}` : ''}`)
    }
    await sleep(intervalMs)
  }
}
