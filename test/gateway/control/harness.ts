/** A WireGuard client (a Device behind its own UdpShell on loopback) to talk to a Gateway under test. */
import type { Test } from 'tap'
import { Device } from '../../../gateway/wireguard/device.ts'
import { UdpShell } from '../../../gateway/wireguard/udp.ts'
import { generatePrivateKey, publicKeyFromPrivate } from '../../../proto/noise/keys.ts'
import { parseIPv4Prefix } from '../../../proto/wire/ipv4.ts'
import { ipPacket } from '../wireguard/harness.ts'
import { udpDevice } from '../../helpers/udp-device.ts'

export interface Client {
  privateKey: Buffer
  publicKey: string
  device: Device
  shell: UdpShell
  replies: Buffer[]
  /** Sends an ICMP echo request from `src` to the gateway's `dst`. */
  ping (src: string, seq: number, dst?: string): void
}

export function newKeyPair (): { privateKey: Buffer, publicKey: string } {
  const privateKey = generatePrivateKey()
  return { privateKey, publicKey: publicKeyFromPrivate(privateKey).toString('base64') }
}

/** A client whose only peer is the gateway at 127.0.0.1:`gatewayPort` (tunnel address 10.100.0.1 unless given). */
export async function startClient (t: Test, gatewayPublicKey: string, gatewayPort: number, options: { privateKey?: Buffer, keepalive?: number, gatewayAddress?: string } = {}): Promise<Client> {
  const privateKey = options.privateKey ?? generatePrivateKey()
  const replies: Buffer[] = []
  const { device, shell } = udpDevice({ privateKey, deliverPacket (packet) { replies.push(Buffer.from(packet)) } })
  device.addPeer({
    publicKey: Buffer.from(gatewayPublicKey, 'base64'),
    allowedIPs: [parseIPv4Prefix(`${options.gatewayAddress ?? '10.100.0.1'}/32`)],
    endpoint: { address: '127.0.0.1', port: gatewayPort },
    persistentKeepalive: options.keepalive ?? 0,
  })
  await shell.listen()
  t.teardown(() => shell.close())
  return {
    privateKey,
    publicKey: publicKeyFromPrivate(privateKey).toString('base64'),
    device,
    shell,
    replies,
    ping (src, seq, dst = '10.100.0.1') { shell.sendPacket(echo(src, dst, seq)) },
  }
}

export function echo (src: string, dst: string, seq: number): Buffer {
  const icmp = Buffer.from([8, 0, 0, 0, 0, 1, (seq >> 8) & 0xff, seq & 0xff])
  let sum = 0
  for (let i = 0; i < icmp.length; i += 2) sum += icmp.readUInt16BE(i)
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16)
  icmp.writeUInt16BE(~sum & 0xffff, 2)
  return ipPacket(src, dst, icmp, 1)
}

/** Echo replies carrying `seq`. */
export function repliesTo (client: Client, seq: number): number {
  return client.replies.filter(r => r[9] === 1 && r[20] === 0 && r.readUInt16BE(26) === seq).length
}

export { until } from '../../helpers/until.ts'
