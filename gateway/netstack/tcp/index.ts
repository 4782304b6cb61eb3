/**
 * Userspace TCP for the gateway (RFC 9293), over the tunnel's IPv4 layer.
 *
 * Public API (keep it this small):
 *
 *   const ip = new IpLayer({ address, metrics, send: d => device.send(d) })
 *   const tcp = new TcpStack({ localAddress: '10.100.0.1', ip, metrics, logger?, options? })
 *   ip.register(IPPROTO_TCP, tcp)               // tcp.input(ip, datagram, now) receives segments
 *
 *   const socket = tcp.connect({ host: '10.100.0.2', port: 80 }, onConnect?)   // -> TcpSocket (a Duplex)
 *   tcp.listen(8080, socket => { ... })         // passive open on our tunnel address
 *   const agent = new http.Agent({ keepAlive: true }); agent.createConnection = tcp.createConnection
 *   http.request({ host: '10.100.0.2', port: 80, agent })   // or { createConnection: tcp.createConnection }
 *   tcp.close()                                 // reset everything (sockets error with ENETDOWN)
 *
 * TcpSocket behaves like net.Socket: 'connect'/'ready', 'data', 'end' (the peer's FIN; half-close
 * with end(), allowHalfOpen as in net), 'drain' (write() returns false when the send buffer is
 * full), 'timeout' (setTimeout: idle, does not close), 'close', and errors with node codes:
 * ECONNREFUSED (RST to our SYN), ECONNRESET (RST; the peer destroyed its socket), ETIMEDOUT (SYN
 * retries, retransmission limit, keepalive, user timeout, or a stuck closing state), EINVAL (host
 * is not a dotted IPv4 address: no name resolution), EMFILE / EADDRNOTAVAIL (limits, ports).
 * Also setNoDelay (Nagle is off by default), setKeepAlive(enable, idleMs) (http.Agent passes its
 * keepAliveMsecs, 1 s by default: probes every idle second), setUserTimeout, remote/local
 * address and port, bytesRead/bytesWritten, ref/unref, destroySoon, resetAndDestroy.
 * Unlike net.Socket, destroy() before end() always sends RST (the peer sees ECONNRESET); after
 * end() the orderly close completes in the background.
 *
 * Ownership: `datagram` buffers handed to input() are kept (payload views, no copy) until the
 * application has read the data: the caller must not reuse them. Written data is copied in.
 * Time: the stack reads its own clock (options `clock`, default performance.now); the `now`
 * argument of input() is ignored so that segment times and timer deadlines always agree.
 *
 * Options (all optional, defaults in constants.ts): mtu (1420 -> MSS 1380), receiveBuffer /
 * sendBuffer (4 MiB each per connection), minBuffer and globalBufferLimit (under global pressure
 * windows and send room shrink to minBuffer), congestionControl ('cubic' | 'newreno'), timeWait
 * (1 s), finWait2Timeout / closeWaitTimeout / lastAckTimeout (idle limits of closing states),
 * userTimeout (60 s), keepAlive*, maxConnections, maxConnectionsPerPeer, maxHalfOpen, minRto /
 * maxRto (200 ms / 120 s), sack, timestamps, windowScaling, delayedAck (40 ms), pacing (on: data
 * leaves at 2 x cwnd / SRTT in slow start, 1.2 x after, in bursts of at least 10 segments or 2 ms).
 * maxBurst (32: at most this many data segments a connection sends back to back, at its pacing
 * rate and in one event-loop turn; the rest continues when the turn ends; 0: no cap).
 * batching (on: in-order data of one event-loop poll phase reaches the socket as one chunk and is
 * acknowledged once, like a kernel with GRO; with SACK, out-of-order segments too; at most 64 KiB
 * per ACK).
 * verifyChecksums (off: input comes only through WireGuard, whose AEAD tag covers every byte).
 * tailLossProbe (on: RFC 8985 probe, the last segment again, after 2 SRTT (at least 2 ms) without
 * an ACK, also in fast recovery, instead of a 200 ms RTO).
 *
 * Inside: core.ts is the sans-IO stack (segments and `now` in; datagrams, socket events and the
 * next deadline out) over connection.ts (application calls, state changes), input.ts (segment
 * arrival), output.ts (what to send, paced by pacer.ts), timers.ts (expiry). A connection's state
 * lives in objects that each keep their invariants and change only through their methods:
 * send-space.ts (SND.*, the send buffer), receive-space.ts (RCV.*, the out-of-order queue, the ACK
 * owed), recovery.ts (SACK scoreboard, fast recovery, probes), deadlines.ts (every timer),
 * events.ts (what the application is told), rtt.ts; cc/ (NewReno, CUBIC), sack.ts (sender
 * scoreboard), reassembly.ts (receiver out-of-order queue), send-buffer.ts. stack.ts is the thin shell with the single
 * timer; socket.ts the Duplex.
 */
export { TcpStack, type TcpStackOptions, type TcpConnectOptions, type TcpListenOptions } from './stack.ts'
export { TcpSocket } from './socket.ts'
export { TcpError, type TcpErrorCode } from './errors.ts'
export { TcpCore, type TcpCoreOptions } from './core.ts'
export type { TcpConnection, ConnectionHandler } from './connection.ts'
export { DEFAULT_TCP_OPTIONS, type TcpOptions } from './options.ts'
export { STATE_NAMES, type TcpStateName } from './state.ts'
