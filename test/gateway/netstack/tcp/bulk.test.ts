/**
 * Two stacks back to back over a seeded lossy link (2% drop, duplicates, reordering by jitter,
 * delay, a bandwidth-limited drop-tail queue) on a virtual clock: bulk transfers both ways at once
 * must arrive byte-exact.
 */
import t, { type Test } from 'tap'
import * as harness from './harness.ts'
import { Sim, randomData, sha256, type LinkConfig } from './harness.ts'
import { bulkBothWays } from '../../../../bench/netstack-sim.ts'
import type { TcpOptions } from '../../../../gateway/netstack/tcp/options.ts'

const LOSSY: LinkConfig = { seed: 42, loss: 0.02, duplicate: 0.01, delay: 10, jitter: 3, bandwidth: 20_000, queueBytes: 300_000 }

function transfer (t: Test, size: number, link: LinkConfig, options: Partial<TcpOptions>, nearWrap = false): void {
  const sim = new Sim(link, options, options)
  if (nearWrap) {
    // Sequence numbers and timestamps start just below 2^32 on both sides, so both wrap mid-transfer.
    for (const core of [sim.a, sim.b]) {
      (core as unknown as { isn: { generate: () => [number, number] } }).isn = { generate: () => [0xffffffff - 1_000_000, 0xffffffff - 2000] }
    }
  }
  const up = randomData(size, 1)
  const down = randomData(size, 2)
  const { client, server, finished } = bulkBothWays(harness, sim, up, down)
  t.ok(finished, `both sides closed (virtual ${Math.round(sim.now)} ms)`)
  t.equal(server.received, size, 'upload length')
  t.equal(client.received, size, 'download length')
  t.equal(server.digest, sha256(up), 'upload sha256')
  t.equal(client.digest, sha256(down), 'download sha256')
  t.equal(client.error, null)
  t.equal(server.error, null)
  const a = sim.metricsA.snapshot()
  const b = sim.metricsB.snapshot()
  t.ok(sim.stats.ab.dropped > 0 && sim.stats.ba.dropped > 0, `the link dropped packets (${sim.stats.ab.dropped}, ${sim.stats.ba.dropped})`)
  t.equal(a.tcp_dropped?.internal_error ?? 0, 0)
  t.equal(b.tcp_dropped?.internal_error ?? 0, 0)
  t.equal(a.tcp_events?.timer_stalled ?? 0, 0)
  // Nothing is left behind once TIME-WAIT ends.
  sim.advance(5000)
  t.equal(sim.a.size + sim.b.size, 0, 'connection tables empty')
  t.equal(sim.a.memoryUsed, 0, 'no buffered bytes left (a)')
  t.equal(sim.b.memoryUsed, 0, 'no buffered bytes left (b)')
  t.comment(`retransmits a: ${JSON.stringify(a.tcp_retransmits)} b: ${JSON.stringify(b.tcp_retransmits)}`)
}

const MB = 1_000_000

t.test('ESTABLISHED bulk 20 MB both ways over a lossy link, NewReno', async t => {
  transfer(t, 20 * MB, LOSSY, { congestionControl: 'newreno' })
})

t.test('ESTABLISHED bulk 20 MB both ways over a lossy link, CUBIC', async t => {
  transfer(t, 20 * MB, { ...LOSSY, seed: 7 }, { congestionControl: 'cubic' })
})

t.test('ESTABLISHED bulk without SACK and timestamps (NewReno partial ACKs, Karn timing)', async t => {
  transfer(t, 4 * MB, { ...LOSSY, seed: 9 }, { congestionControl: 'newreno', sack: false, timestamps: false })
})

t.test('ESTABLISHED bulk with small buffers and heavy loss', async t => {
  transfer(t, 2 * MB, { seed: 5, loss: 0.08, duplicate: 0.03, delay: 5, jitter: 8, bandwidth: 5000, queueBytes: 50_000 },
    { receiveBuffer: 32 * 1024, sendBuffer: 32 * 1024 })
})

t.test('ESTABLISHED bulk across sequence-number and timestamp wrap', async t => {
  transfer(t, 4 * MB, { ...LOSSY, seed: 11 }, {}, true)
})
