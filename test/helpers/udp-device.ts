/** A WireGuard Device behind its own UdpShell on an ephemeral port: a test's client, container or stand-in gateway. */
import { Metrics } from '../../gateway/metrics.ts'
import { Device, type DeviceIo } from '../../gateway/wireguard/device.ts'
import { UdpShell, wallClockOffset } from '../../gateway/wireguard/udp.ts'

export interface UdpDeviceOptions {
  privateKey: Buffer
  metrics?: Metrics
  /** Where decrypted packets go (default: dropped). */
  deliverPacket?: DeviceIo['deliverPacket']
  listenAddress?: string
}

/** Built and attached, not yet listening: the caller calls `shell.listen()` and closes the shell. */
export function udpDevice (o: UdpDeviceOptions): { device: Device, shell: UdpShell } {
  const shell = new UdpShell({ listenAddress: o.listenAddress ?? '127.0.0.1', listenPort: 0 })
  const device = new Device({
    privateKey: o.privateKey,
    metrics: o.metrics ?? new Metrics(),
    wallClockOffset: wallClockOffset(),
    io: {
      sendDatagram (d, a, p) { shell.sendDatagram(d, a, p) },
      deliverPacket: o.deliverPacket ?? (() => {}),
    },
  })
  shell.attach(device)
  return { device, shell }
}
