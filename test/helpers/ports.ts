/**
 * Loopback ports for servers whose number must be known before they listen: a CA told where to
 * validate, a child process given `--port`, an edge whose ports go into pebble's config.
 *
 * "Bind port 0, read the number, close" hands out a port from the kernel's ephemeral range, and
 * until the real server listens, any outgoing connection on the machine may take it (the tests
 * run in parallel and make thousands of connections): listen() then fails with EADDRINUSE. So the
 * ports here come from below that range, where the kernel never picks one on its own; they start
 * at a random point (test processes choose at the same time), are never handed out twice by one
 * process, and are checked free (TCP, and UDP too when asked) at the moment of choosing.
 */
import fs from 'node:fs'
import net from 'node:net'
import dgram from 'node:dgram'

const LOWEST = 10_000
const given = new Set<number>()
/**
 * Ports that fetch() (undici) and Chromium refuse to connect to ("bad port", the Fetch standard's
 * port blocking list); above LOWEST it names only 10080.
 */
const FETCH_BLOCKED = new Set([10_080])

/** The first port of the kernel's ephemeral range (Linux: /proc; elsewhere the IANA start). */
function ephemeralStart (): number {
  try {
    const low = Number(fs.readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0])
    if (Number.isInteger(low) && low > 0) return low
  } catch { /* not Linux */ }
  return 49_152
}

function tcpFree (port: number): Promise<boolean> {
  return new Promise(resolve => {
    const s = net.createServer()
    s.once('error', () => { resolve(false) })
    s.listen(port, '127.0.0.1', () => { s.close(() => { resolve(true) }) })
  })
}

function udpFree (port: number): Promise<boolean> {
  return new Promise(resolve => {
    const u = dgram.createSocket('udp4')
    u.once('error', () => { try { u.close() } catch { /* never bound */ } resolve(false) })
    u.bind(port, '127.0.0.1', () => { u.close(() => { resolve(true) }) })
  })
}

/** A port on 127.0.0.1 that is free for TCP (and for UDP with `udp`) and outside the ephemeral range. */
export async function freePort (options: { udp?: boolean } = {}): Promise<number> {
  const high = ephemeralStart()
  const span = high - LOWEST
  if (span < 1_000) throw new Error(`the ephemeral port range starts at ${high}: no room below it for test ports`)
  const first = Math.floor(Math.random() * span)
  for (let i = 0; i < 200; i++) {
    const port = LOWEST + (first + i * 7919) % span // a prime stride: spread out, no repeats within span
    if (given.has(port) || FETCH_BLOCKED.has(port)) continue
    if (!await tcpFree(port)) continue
    if (options.udp === true && !await udpFree(port)) continue
    given.add(port)
    return port
  }
  throw new Error(`no free port between ${LOWEST} and ${high} after 200 tries`)
}
