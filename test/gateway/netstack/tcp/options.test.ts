import t from 'tap'
import { resolveTcpOptions } from '../../../../gateway/netstack/tcp/options.ts'

t.test('derived values and validation', async t => {
  const o = resolveTcpOptions()
  t.equal(o.mss, 1380, 'MTU 1420 - 40')
  t.equal(o.windowShift, 7, '4 MiB needs a shift of 7 (65535 << 6 < 4 MiB)')
  t.equal(o.noDelay, true, 'Nagle off by default')
  t.equal(o.timeWait, 1000)
  t.equal(o.minRto, 200)
  t.equal(o.maxRto, 120_000)
  t.equal(o.initialWindowSegments, 10)
  t.equal(resolveTcpOptions({ receiveBuffer: 65535 }).windowShift, 0)
  t.equal(resolveTcpOptions({ receiveBuffer: 1 << 30 }).windowShift, 14, 'capped at 14 (RFC 7323 2.3)')
  t.equal(resolveTcpOptions({ mtu: 1280 }).mss, 1240)
  t.throws(() => resolveTcpOptions({ mtu: 50 }), RangeError)
  t.throws(() => resolveTcpOptions({ minRto: 500, maxRto: 100 }), RangeError)
  t.throws(() => resolveTcpOptions({ receiveBuffer: -1 }), RangeError)
  t.throws(() => resolveTcpOptions({ congestionControl: 'bbr' as 'cubic' }), RangeError)
  t.throws(() => resolveTcpOptions({ ephemeralPortMin: 60000, ephemeralPortMax: 50000 }), RangeError)
})
