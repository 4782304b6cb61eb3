/**
 * Debian's pebble (ACME test CA) and pebble-challtestsrv (its DNS server), started on loopback with
 * free ports for one test. pebble's VA resolves every name through challtestsrv, which answers
 * 127.0.0.1 for A queries, and validates HTTP-01 / TLS-ALPN-01 on `httpPort` / `tlsPort`: the
 * edge's listeners under test. Debian ships no test certificates for pebble's own HTTPS listener,
 * so one is made here with openssl (SAN 127.0.0.1) and handed to the ACME client as the CA bundle.
 */
import fs from 'node:fs'
import path from 'node:path'
import net from 'node:net'
import https from 'node:https'
import { spawn, execFileSync, type ChildProcess } from 'node:child_process'
import { setTimeout as sleep } from 'node:timers/promises'
import { tempDir, type Teardown } from '../gateway/edge/helpers.ts'
import { freePort } from './ports.ts'

export interface PebbleOptions {
  /** Port pebble's VA uses for HTTP-01 (the edge's HTTP listener). */
  httpPort: number
  /** Port pebble's VA uses for TLS-ALPN-01 (the edge's HTTPS listener). */
  tlsPort: number
  /** Extra environment: PEBBLE_WFE_NONCEREJECT, PEBBLE_VA_SLEEPTIME, ... */
  env?: Record<string, string>
  /** Keep pebble's chaos defaults (nonce rejection 5%, VA sleep up to 15 s, authz reuse). */
  chaos?: boolean
}

export interface Pebble {
  directoryUrl: string
  /** PEM of the certificate pebble's own HTTPS listener uses (trust it to reach the directory). */
  listenerCaPem: string
  managementUrl: string
  dnsAddress: string
  challtestsrvUrl: string
  /** The root that signs issued certificates (GET /roots/0 on the management port). */
  root (): Promise<string>
  /** Stop pebble only (the CA goes down); start() brings it back with a fresh state and root. */
  stop (): Promise<void>
  start (): Promise<void>
}

async function waitForPort (port: number, child: ChildProcess, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`process exited (${child.exitCode}) before listening on ${port}`)
    const ok = await new Promise<boolean>(resolve => {
      const c = net.connect(port, '127.0.0.1', () => { c.destroy(); resolve(true) })
      c.once('error', () => resolve(false))
    })
    if (ok) return
    await sleep(50)
  }
  throw new Error(`nothing listening on ${port} after ${ms} ms`)
}

async function stopChild (child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise<void>(resolve => child.once('exit', () => resolve()))
  child.kill('SIGTERM')
  const timer = setTimeout(() => child.kill('SIGKILL'), 3000)
  await exited
  clearTimeout(timer)
}

export async function startPebble (t: Teardown, options: PebbleOptions): Promise<Pebble> {
  const dir = tempDir(t, 'cc-pebble-')
  const certFile = path.join(dir, 'cert.pem')
  const keyFile = path.join(dir, 'key.pem')
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', keyFile, '-out', certFile, '-days', '2', '-subj', '/CN=pebble test listener',
    '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'], { stdio: 'ignore' })
  const [listenPort, managementPort, dnsPort, challManagementPort] = await Promise.all([freePort(), freePort(), freePort(), freePort()])
  const configFile = path.join(dir, 'pebble-config.json')
  fs.writeFileSync(configFile, JSON.stringify({
    pebble: {
      listenAddress: `127.0.0.1:${listenPort}`,
      managementListenAddress: `127.0.0.1:${managementPort}`,
      certificate: certFile,
      privateKey: keyFile,
      httpPort: options.httpPort,
      tlsPort: options.tlsPort,
      ocspResponderURL: '',
      externalAccountBindingRequired: false,
    },
  }))

  const chall = spawn('pebble-challtestsrv', [
    '-defaultIPv4', '127.0.0.1', '-defaultIPv6', '',
    '-dns01', `127.0.0.1:${dnsPort}`, '-http01', '', '-https01', '', '-tlsalpn01', '',
    '-management', `127.0.0.1:${challManagementPort}`,
  ], { stdio: 'ignore' })
  t.teardown(() => stopChild(chall))
  await waitForPort(challManagementPort, chall)

  const env: Record<string, string> = {
    ...process.env as Record<string, string>,
    PEBBLE_VA_ALWAYS_VALID: '0',
    ...(options.chaos === true ? {} : { PEBBLE_VA_NOSLEEP: '1', PEBBLE_WFE_NONCEREJECT: '0', PEBBLE_AUTHZREUSE: '0' }),
    ...options.env,
  }
  let child: ChildProcess | undefined
  const start = async (): Promise<void> => {
    const c = spawn('pebble', ['-config', configFile, '-dnsserver', `127.0.0.1:${dnsPort}`], { env, stdio: 'ignore' })
    child = c
    await waitForPort(listenPort, c)
    await waitForPort(managementPort, c)
  }
  const stop = async (): Promise<void> => { if (child !== undefined) await stopChild(child) }
  t.teardown(stop)
  await start()

  const listenerCaPem = fs.readFileSync(certFile, 'utf8')
  return {
    directoryUrl: `https://127.0.0.1:${listenPort}/dir`,
    listenerCaPem,
    managementUrl: `https://127.0.0.1:${managementPort}`,
    dnsAddress: `127.0.0.1:${dnsPort}`,
    challtestsrvUrl: `http://127.0.0.1:${challManagementPort}`,
    root: async () => await new Promise<string>((resolve, reject) => {
      https.get(`https://127.0.0.1:${managementPort}/roots/0`, { ca: listenerCaPem }, res => {
        let body = ''
        res.setEncoding('utf8')
        res.on('data', (c: string) => { body += c })
        res.on('end', () => res.statusCode === 200 ? resolve(body) : reject(new Error(`roots/0: ${res.statusCode}`)))
      }).on('error', reject)
    }),
    stop,
    start,
  }
}
