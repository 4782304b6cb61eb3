import t from 'tap'
import { storedClientAddress, truncateClientAddress } from '../../../control/services/usage.ts'

t.test('client addresses are cut to their /24 (IPv4) or /48 (IPv6)', async t => {
  for (const [address, network] of [
    ['203.0.113.77', '203.0.113.0'],
    ['10.0.0.1', '10.0.0.0'],
    ['2001:db8:abcd:12:34::9', '2001:db8:abcd::'],
    ['2001:0DB8:ABCD:FFFF:FFFF:FFFF:FFFF:FFFF', '2001:db8:abcd::'],
    ['2001:db8::1', '2001:db8::'],
    ['::1', '::'],
    ['fe80::1%eth0', 'fe80::'],
    ['::ffff:192.0.2.200', '192.0.2.0'],
    ['::ffff:c000:2c8', '192.0.2.0'],
  ]) t.equal(truncateClientAddress(address), network, address)
  for (const junk of ['', 'unknown', '203.0.113', '1.2.3.4.5', 'example.test', '2001:db8:::1']) t.equal(truncateClientAddress(junk), null, `not an address: ${JSON.stringify(junk)}`)
})

t.test('full addresses, when kept, are stored in canonical form', async t => {
  t.equal(storedClientAddress('203.0.113.77', true), '203.0.113.77')
  t.equal(storedClientAddress('2001:0DB8:0000:0000:0000:0000:0000:0001', true), '2001:db8::1')
  t.equal(storedClientAddress('unknown', true), null)
  t.equal(storedClientAddress('203.0.113.77', false), '203.0.113.0')
})
