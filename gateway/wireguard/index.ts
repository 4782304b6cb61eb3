/**
 * Userspace WireGuard: the sans-IO Device core (device.ts, with handshake.ts, data.ts, timers.ts)
 * and the node:dgram shell (udp.ts). The gateway uses both; the agent can reuse them as a client.
 */
export { Device, formatEndpoint, type DeviceIo, type DeviceOptions, type PeerStatus } from './device.ts'
export { Peer, type Endpoint, type PeerOptions } from './peer.ts'
export { UdpShell, monotonicNow, wallClockOffset, type UdpShellOptions } from './udp.ts'
export { MAX_STAGED_PACKETS, MAX_HANDSHAKE_ATTEMPTS, UNDER_LOAD_HANDSHAKES_PER_SECOND } from './limits.ts'
