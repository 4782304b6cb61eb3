/**
 * A restarted gateway initiates to its peers at the endpoints it kept (gateway/wireguard/resume.ts,
 * endpoint-file.ts): real Gateway processes' worth of wiring in this process (UDP on loopback, the
 * edge for its data directory) and 20 WireGuard peers from bench/wg-peers.ts, each on its own
 * loopback address. After the restart the peers never initiate: a tunnel passes only if the gateway
 * initiated to the peer. No timing assertions.
 */
import t, { type Test } from 'tap'
import fs from 'node:fs'
import path from 'node:path'
import pino from 'pino'
import { Gateway, ENDPOINT_FILE } from '../../../gateway/index.ts'
import { validateConfig } from '../../../gateway/config/schema.ts'
import { encodeKey, generatePrivateKey, publicKeyFromPrivate } from '../../../proto/noise/keys.ts'
import { peerTunnelAddress, startPeers } from '../../../bench/wg-peers.ts'
import { Device } from '../../../gateway/wireguard/device.ts'
import { HandshakeResumer } from '../../../gateway/wireguard/resume.ts'
import { Metrics } from '../../../gateway/metrics.ts'
import { REKEY_TIMEOUT } from '../../../proto/noise/index.ts'
import { parseIPv4Prefix } from '../../../proto/wire/ipv4.ts'
import { tempDir } from '../edge/helpers.ts'
import { until } from '../../helpers/until.ts'

const PEERS = 20
const silent = pino({ level: 'silent' })

async function setup (t: Test, limitMs: number, resumeInitiationsPerSecond?: number): Promise<{ start: () => Promise<Gateway>, sim: Awaited<ReturnType<typeof startPeers>>, file: string }> {
  const dir = tempDir(t, 'cc-resume-')
  const gatewayKey = generatePrivateKey()
  const peerKeys = Array.from({ length: PEERS }, () => generatePrivateKey())
  const raw = {
    privateKey: encodeKey(gatewayKey),
    listenPort: 0,
    listenAddress: '127.0.0.1',
    address: '10.100.0.1',
    udpIo: 'dgram',
    peers: peerKeys.map((k, i) => ({ publicKey: encodeKey(publicKeyFromPrivate(k)), allowedIPs: [`${peerTunnelAddress(i)}/32`] })),
    edge: { dataDir: path.join(dir, 'data'), httpsListen: '127.0.0.1:0', httpListen: null },
    ...(resumeInitiationsPerSecond === undefined ? {} : { dos: { resumeInitiationsPerSecond } }),
  }
  let port = 0
  const start = async (): Promise<Gateway> => {
    const gw = await Gateway.start(validateConfig({ ...raw, listenPort: port }), silent)
    port = Number(gw.listen.slice(gw.listen.lastIndexOf(':') + 1))
    return gw
  }
  // The peers need the gateway's port: bind it once, then keep it across the restart.
  const first = await start()
  const sim = await startPeers({
    target: `127.0.0.1:${port}`,
    serverPublicKey: encodeKey(publicKeyFromPrivate(gatewayKey)),
    gatewayAddress: '10.100.0.1',
    peers: peerKeys.map((k, i) => ({ privateKey: encodeKey(k), address: peerTunnelAddress(i) })),
    limitMs,
  })
  t.teardown(() => { sim.close() })
  const up = await sim.up()
  t.equal(up.passed, PEERS, 'before the restart every peer initiated and passed')
  const file = path.join(raw.edge.dataDir, ENDPOINT_FILE)
  // Written after a burst of endpoint changes, without a shutdown: what a crash leaves behind.
  await until('the endpoints file', () => fs.existsSync(file), 10_000, 50)
  await first.close(0)
  return { start, sim, file }
}

t.test('gateway restarted with stored endpoints: it initiates to every peer and each tunnel passes without the peer sending first', async t => {
  const { start, sim, file } = await setup(t, 20_000)
  const stored = JSON.parse(fs.readFileSync(file, 'utf8')) as { endpoints: Record<string, [string, number]> }
  t.equal(Object.keys(stored.endpoints).length, PEERS, 'every peer\'s endpoint was kept')
  t.ok(Object.values(stored.endpoints).every(([address]) => address.startsWith('127.1.')), 'each is the peer\'s own loopback address')

  const gw = await start()
  t.teardown(async () => { await gw.close(0) })
  const again = await sim.up({ initiate: false })
  t.equal(again.initiations, 0, 'no peer initiated after the restart')
  t.equal(again.passed, PEERS, 'every peer\'s echo came back through a tunnel the gateway initiated')
  t.ok(again.responses >= PEERS, 'each peer answered an initiation of the gateway')
  t.equal(gw.resumer.sent, PEERS, 'one initiation per stored endpoint')
})

t.test('gateway restarted with resuming off: no initiation goes out and no tunnel passes until a peer initiates', async t => {
  const { start, sim } = await setup(t, 5_000, 0)
  const gw = await start()
  t.teardown(async () => { await gw.close(0) })
  const waiting = await sim.up({ initiate: false })
  t.equal(waiting.responses, 0, 'the gateway sent no initiation')
  t.equal(waiting.passed, 0, 'no tunnel without an initiation from either side')
  const peersFirst = await sim.up()
  t.equal(peersFirst.passed, PEERS, 'the peers initiating brings every tunnel back')
})

t.test('resuming with peers that do not answer: no more than maxInFlight initiations await a response at once', async t => {
  const sent: Array<{ address: string, port: number }> = []
  const device = new Device({ privateKey: generatePrivateKey(), metrics: new Metrics(), io: { sendDatagram (_d, address, port) { sent.push({ address, port }) }, deliverPacket () {} } })
  let now = 1_000_000
  const batches: number[] = []
  const resumer = new HandshakeResumer(device, { perSecond: 100_000, maxInFlight: 5, now: () => now, wake: () => {}, onBatch: n => { batches.push(n) } })
  t.teardown(() => { resumer.close() })
  resumer.start()
  for (let i = 0; i < 20; i++) {
    const peer = device.addPeer({ publicKey: publicKeyFromPrivate(generatePrivateKey()), allowedIPs: [parseIPv4Prefix(`${peerTunnelAddress(i)}/32`)] })
    peer.endpoint = { address: '127.0.0.1', port: 9 }
    resumer.add(peer)
  }
  await until('the first window', () => sent.length === 5, 5_000)
  t.same(batches, [20], 'peers added one by one after start (control mode) are announced as one batch of 20')
  await new Promise(resolve => setTimeout(resolve, 300))
  t.equal(sent.length, 5, 'five initiations out, the other fifteen wait although the pace allows them')
  t.equal(resumer.pending, 15)
  now += REKEY_TIMEOUT
  await until('the second window', () => sent.length === 10, 5_000)
  t.equal(resumer.pending, 10, 'unanswered for REKEY_TIMEOUT: the window moves on (their retransmissions are the timers\' job)')
})
