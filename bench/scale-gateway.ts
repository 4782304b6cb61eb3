/**
 * One `cloud-connect gateway --config FILE` process for the scale benchmarks, and what is measured
 * of it from outside: /proc (CPU, RSS), its data directory, its HTTPS listener.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { readFileSync, readdirSync, lstatSync } from 'node:fs'
import dgram from 'node:dgram'
import net from 'node:net'
import tls from 'node:tls'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const ROOT = resolve(fileURLToPath(import.meta.url), '../..')
const CLI = join(ROOT, 'bin/cloud-connect.js')

export interface Gateway { child: ChildProcess, dir: string, httpsPort: number, output: string[] }

export async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const s = net.createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port
      s.close(() => resolve(port))
    })
  })
}

/** `env` is added to this process's environment for the gateway alone (an allocator, NODE_OPTIONS). */
export function startGateway (dir: string, configFile: string, httpsPort: number, env: Record<string, string> = {}): Gateway {
  const child = spawn(process.execPath, [CLI, 'gateway', '--config', configFile, '--log-level', 'warn'], { stdio: ['ignore', 'pipe', 'pipe'], cwd: dir, env: { ...process.env, ...env } })
  const output: string[] = []
  const keep = (chunk: Buffer): void => {
    output.push(chunk.toString())
    if (output.length > 50) output.shift()
  }
  child.stdout!.on('data', keep)
  child.stderr!.on('data', keep)
  return { child, dir, httpsPort, output }
}

/**
 * The --gateway-env value: `K=V` pairs separated by spaces (values may hold commas and colons, as
 * MALLOC_CONF does), e.g. `LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 MALLOC_CONF=background_thread:true`.
 */
export function parseEnvList (value: string): Record<string, string> {
  const env: Record<string, string> = {}
  for (const pair of value.trim().split(/\s+/).filter(p => p !== '')) {
    const m = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(pair)
    if (m === null) throw new Error(`${pair} is not NAME=VALUE`)
    env[m[1]] = m[2]
  }
  return env
}

export async function stopGateway (g: Gateway): Promise<void> {
  if (g.child.exitCode === null && g.child.signalCode === null) {
    const exited = new Promise(resolve => g.child.once('exit', resolve))
    g.child.kill('SIGTERM')
    const killer = setTimeout(() => g.child.kill('SIGKILL'), 10_000)
    await exited
    clearTimeout(killer)
  }
}

export function memoryMB (pid: number): { rss: number, peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const kb = (field: string): number => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN)
  return { rss: kb('VmRSS') / 1024, peak: kb('VmHWM') / 1024 }
}

/** Bytes the directory takes on disk (allocated blocks) and how many certificates it holds. */
export function diskUsage (dir: string): { bytes: number, certificates: number } {
  let bytes = 0
  let certificates = 0
  const walk = (p: string): void => {
    let st
    try { st = lstatSync(p) } catch { return }
    bytes += st.blocks * 512
    if (!st.isDirectory()) {
      if (p.endsWith('certificate.pem')) certificates++
      return
    }
    let entries: string[] = []
    try { entries = readdirSync(p) } catch { return }
    for (const e of entries) walk(join(p, e))
  }
  walk(dir)
  return { bytes, certificates }
}

export function exited (g: Gateway): boolean {
  return g.child.exitCode !== null || g.child.signalCode !== null
}

export function failure (g: Gateway, what: string): Error {
  return new Error(`${what}; gateway output:\n${g.output.join('').slice(-4000)}`)
}

export async function accepts (port: number): Promise<boolean> {
  return await new Promise(resolve => {
    const s = net.connect({ host: '127.0.0.1', port }, () => { s.destroy(); resolve(true) })
    s.once('error', () => resolve(false))
    s.setTimeout(1_000, () => { s.destroy(); resolve(false) })
  })
}

/** One HTTPS request with SNI `servername` and an unrouted Host: true when an HTTP status line comes back. */
export async function httpsAnswers (port: number, servername: string): Promise<boolean> {
  return await new Promise(resolve => {
    let text = ''
    const done = (ok: boolean): void => { socket.destroy(); resolve(ok) }
    const socket = tls.connect({ host: '127.0.0.1', port, servername, rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] }, () => {
      socket.write('GET / HTTP/1.1\r\nhost: unrouted.invalid\r\nconnection: close\r\n\r\n')
    })
    socket.setEncoding('utf8')
    socket.on('data', (chunk: string) => {
      text += chunk
      if (/^HTTP\/1\.1 \d{3} /.test(text)) done(true)
    })
    socket.once('error', () => done(false))
    socket.once('close', () => done(false))
    socket.setTimeout(15_000, () => done(false))
  })
}

/** A UDP port free on 127.0.0.1 now (for a gateway that must keep its port across a restart). */
export async function freeUdpPort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const s = dgram.createSocket('udp4')
    s.once('error', reject)
    s.bind(0, '127.0.0.1', () => {
      const port = s.address().port
      s.close(() => resolve(port))
    })
  })
}
