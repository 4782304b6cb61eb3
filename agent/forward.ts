/**
 * Userspace mode's only job on the data path: every TCP connection the gateway opens to our tunnel
 * address is spliced to the local target (Erugo's web server) with backpressure both ways and
 * half-close kept (pipe ends the other side's writable on FIN). A target that refuses gets the
 * tunnel connection reset, so the gateway answers 502 at once instead of waiting.
 */
import net from 'node:net'
import type { Duplex } from 'node:stream'
import type { Logger } from 'pino'
import type { CounterFamily } from '../gateway/metrics.ts'

export interface ForwardTarget {
  host: string
  port: number
}

/** `http://127.0.0.1:80`, `tcp://erugo:8080`, `127.0.0.1:80` -> host + port. */
export function parseTarget (text: string): ForwardTarget {
  let url: URL
  try {
    url = new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(text) ? text : `tcp://${text}`)
  } catch {
    throw new Error(`not a target URL: ${text}`)
  }
  if (url.protocol !== 'http:' && url.protocol !== 'tcp:') throw new Error(`target must be http:// or tcp:// (got ${url.protocol}//): TLS to the target is not supported`)
  if (url.pathname !== '/' && url.pathname !== '') throw new Error(`the target is a host and port, without a path (got ${url.pathname})`)
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1')
  if (host === '') throw new Error(`no host in target ${text}`)
  const port = url.port === '' ? (url.protocol === 'http:' ? 80 : NaN) : Number(url.port)
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`no port in target ${text}`)
  return { host, port }
}

const WARN_INTERVAL_MS = 30_000

export interface Forwarder {
  /** Splices one accepted tunnel connection to the target. */
  accept (tunnelSocket: Duplex & { destroy (err?: Error): unknown }): void
  /** Connections currently open. */
  readonly active: number
  /** Destroys every open connection. */
  closeAll (): void
}

export function createForwarder (target: ForwardTarget, counters: CounterFamily, logger?: Logger): Forwarder {
  const open = new Set<{ tunnel: Duplex, upstream: net.Socket }>()
  // A stopped web server must not flood the log: one warning per interval, the rest counted.
  let lastWarnAt = -Infinity
  return {
    get active () { return open.size },
    accept (tunnel) {
      counters.inc('accepted')
      const upstream = net.connect({ host: target.host, port: target.port, allowHalfOpen: true })
      upstream.setNoDelay(true)
      const pair = { tunnel, upstream }
      open.add(pair)
      let connected = false
      upstream.once('connect', () => { connected = true })
      upstream.on('error', err => {
        counters.inc(connected ? 'target_error' : 'target_refused')
        if (!connected && Date.now() - lastWarnAt > WARN_INTERVAL_MS) {
          lastWarnAt = Date.now()
          logger?.warn({ err, target: `${target.host}:${target.port}`, refused: counters.get('target_refused') }, 'the local target did not accept a connection')
        }
        // destroy() before end() resets the tunnel connection (see gateway/netstack/tcp).
        tunnel.destroy()
      })
      tunnel.on('error', err => {
        counters.inc('tunnel_error')
        logger?.debug({ err }, 'tunnel connection failed')
        upstream.destroy()
      })
      tunnel.on('close', () => {
        open.delete(pair)
        // A tunnel connection that ended without both FINs (reset, destroyed) takes the target's with it;
        // after an orderly close the target's side finishes on its own (pipe has ended it).
        if (!upstream.destroyed && (!tunnel.readableEnded || !upstream.readableEnded)) upstream.destroy()
      })
      tunnel.pipe(upstream)
      upstream.pipe(tunnel)
    },
    closeAll () {
      for (const { tunnel, upstream } of open) {
        upstream.destroy()
        tunnel.destroy()
      }
      open.clear()
    },
  }
}
