/**
 * Userspace TCP for the gateway (RFC 9293), over the tunnel's IPv4 layer.
 *
 * Public API (keep it this small):
 *
 *   const tcp = new TcpStack({ localAddress: '10.100.0.1', ip: ipLayer, metrics, logger?, options? })
 *   ipLayer.register(IPPROTO_TCP, tcp)          // tcp.input(ip, datagram, now) receives segments
 *
 *   const socket = tcp.connect({ host: '10.100.0.2', port: 80 }, onConnect?)   // -> TcpSocket (a Duplex)
 *   tcp.listen(8080, socket => { ... })         // passive open on our tunnel address
 *   const agent = new http.Agent({ keepAlive: true }); agent.createConnection = tcp.createConnection
 *   tcp.close()                                 // reset everything, stop the timer
 *
 * TcpSocket behaves like net.Socket: 'connect', 'data', 'end' (peer's FIN; half-close with end()),
 * 'drain' (write() returns false when the send buffer is full), 'timeout' (setTimeout), 'close',
 * and errors with node codes: ECONNREFUSED (RST to our SYN), ECONNRESET (RST, or the peer
 * destroyed its socket), ETIMEDOUT (SYN retries, retransmissions, keepalive, user timeout or a
 * stuck closing state). setNoDelay (Nagle is off by default), setKeepAlive, setUserTimeout,
 * remoteAddress/remotePort, localAddress/localPort, bytesRead/bytesWritten, ref/unref.
 * destroy() before end() sends RST; after end() the close completes gracefully in the background.
 *
 * Ownership: `datagram` buffers handed to input() are kept (payload views, no copy) until the
 * application has read the data: the caller must not reuse them. Written data is copied in.
 *
 * Options (all optional, defaults in constants.ts): mtu (1420 -> MSS 1380), receiveBuffer /
 * sendBuffer (4 MiB each per connection), globalBufferLimit, congestionControl ('cubic' |
 * 'newreno'), timeWait (1 s), finWait2Timeout / closeWaitTimeout / lastAckTimeout, userTimeout,
 * keepAlive*, maxConnections, maxConnectionsPerPeer, minRto / maxRto, sack, timestamps, ...
 *
 * Inside: core.ts is the sans-IO stack (segments and `now` in; datagrams, socket events and the
 * next deadline out) with connection.ts (state and timers), input.ts (segment arrival),
 * output.ts (what to send), cc/ (NewReno, CUBIC), rtt.ts, sack.ts (sender scoreboard),
 * reassembly.ts (receiver out-of-order queue), send-buffer.ts; stack.ts is the thin shell with
 * the single timer; socket.ts the Duplex.
 */
export { TcpStack, type TcpStackOptions, type TcpConnectOptions, type TcpListenOptions } from './stack.ts'
export { TcpSocket } from './socket.ts'
export { TcpError, type TcpErrorCode } from './errors.ts'
export { TcpCore, type TcpCoreOptions } from './core.ts'
export type { TcpConnection, ConnectionHandler } from './connection.ts'
export { DEFAULT_TCP_OPTIONS, type TcpOptions } from './options.ts'
export { STATE_NAMES, type TcpStateName } from './state.ts'
