/**
 * TLS-ALPN-01 (RFC 8737) on the edge's HTTPS listener. A validation connection offers only the
 * ALPN protocol "acme-tls/1" and must get a self-signed certificate carrying the key
 * authorization's digest. Node picks the certificate (SNICallback) before ALPN is known, so the
 * listener looks at the first bytes of each connection while a challenge is pending: a ClientHello
 * naming "acme-tls/1" goes to a separate TLS server that serves challenge certificates only; every
 * other connection goes to the edge untouched. With no challenge pending nothing is inspected.
 */
import net from 'node:net'
import tls from 'node:tls'
import * as acme from 'acme-client'
import type { ChallengeSolver } from './challenges.ts'
import { intercept } from '../intercept.ts'

/** RFC 8737 4: the ALPN protocol ID, as it appears on the wire in the ClientHello. */
const ACME_TLS_1 = Buffer.from('acme-tls/1')

export class TlsAlpnChallenges implements ChallengeSolver {
  readonly type = 'tls-alpn-01'
  private readonly contexts = new Map<string, tls.SecureContext>()
  private readonly server: tls.Server

  constructor () {
    this.server = new tls.Server({
      ALPNProtocols: ['acme-tls/1'],
      SNICallback: (servername, cb) => cb(null, this.contexts.get(servername.toLowerCase()) ?? tls.createSecureContext({})),
    })
    // The handshake is the whole validation (RFC 8737 3): close once it is done.
    this.server.on('secureConnection', socket => socket.end())
    this.server.on('tlsClientError', (_err, socket) => socket.destroy())
  }

  async present (identifier: string, _token: string, keyAuthorization: string): Promise<void> {
    const key = await acme.crypto.createPrivateEcdsaKey('P-256')
    const authz = { identifier: { type: 'dns', value: identifier } } as unknown as acme.Authorization
    const [, cert] = await acme.crypto.createAlpnCertificate(authz, keyAuthorization, key)
    this.contexts.set(identifier, tls.createSecureContext({ key, cert }))
  }

  async cleanup (identifier: string): Promise<void> {
    this.contexts.delete(identifier)
  }

  /** Put the challenge check in front of `server`'s connection handling (call once, before listen). */
  attach (server: net.Server): void {
    intercept<net.Socket>(server, 'connection', (socket, handOn) => {
      if (this.contexts.size === 0) { handOn(socket); return }
      socket.once('error', () => socket.destroy())
      socket.once('data', (first: Buffer) => {
        socket.pause()
        socket.unshift(first)
        if (first.includes(ACME_TLS_1)) this.server.emit('connection', socket)
        else handOn(socket)
      })
    })
  }
}
