import t from 'tap'
import net from 'node:net'
import {
  addressBytes, bindDualStack, clientPrefix, formatHostPort, ipv6Bytes, isNoIpv6Error, mappedAddress, plainAddress, unbracket,
} from '../../../proto/net/address.ts'

function errno (code: string): NodeJS.ErrnoException {
  const err = new Error(`bind: ${code}`) as NodeJS.ErrnoException
  err.code = code
  return err
}

t.test('an IPv4-mapped address reads as plain IPv4, anything else is kept', async t => {
  t.equal(plainAddress('::ffff:198.51.100.4'), '198.51.100.4')
  t.equal(plainAddress('::FFFF:10.0.0.1'), '10.0.0.1')
  t.equal(plainAddress('2001:db8::1'), '2001:db8::1')
  t.equal(plainAddress('::1'), '::1')
  t.equal(plainAddress('198.51.100.4'), '198.51.100.4')
  t.equal(plainAddress('::ffff:2001:db8::1'), '::ffff:2001:db8::1', 'not a mapped IPv4 address')
})

t.test('an IPv4 destination maps into IPv6 for an IPv6 socket', async t => {
  t.equal(mappedAddress('198.51.100.4'), '::ffff:198.51.100.4')
  t.equal(mappedAddress('2001:db8::1'), '2001:db8::1')
})

t.test('host:port brackets IPv6 only (RFC 3986 3.2.2)', async t => {
  t.equal(formatHostPort('2001:db8::1', 51820), '[2001:db8::1]:51820')
  t.equal(formatHostPort('198.51.100.4', 51820), '198.51.100.4:51820')
  t.equal(unbracket('[::1]'), '::1')
  t.equal(unbracket('::'), '::')
  t.equal(unbracket('example.com'), 'example.com')
})

t.test('address bytes agree with the kernel\'s parser on valid input and refuse the rest', async t => {
  const cases = ['::', '::1', '2001:db8::1', 'fd00:198:18::2', '2001:db8:0:0:1:0:0:1', '1:2:3:4:5:6:7:8', 'fe80::1', '::ffff:1.2.3.4', '64:ff9b::192.0.2.33']
  for (const text of cases) {
    // node:net's SocketAddress parses with inet_pton; its canonical form must round-trip our bytes.
    const bytes = ipv6Bytes(text)
    t.ok(bytes !== null, text)
    const groups: string[] = []
    for (let i = 0; i < 16; i += 2) groups.push(((bytes![i] << 8) | bytes![i + 1]).toString(16))
    t.equal(new net.SocketAddress({ address: groups.join(':'), family: 'ipv6' }).address, new net.SocketAddress({ address: text, family: 'ipv6' }).address, `${text} bytes`)
  }
  for (const bad of ['', ':', '1::2::3', '1:2:3:4:5:6:7:8:9', '12345::', 'g::1', '1:2:3:4:5:6:7::8', '::1.2.3', '::256.1.1.1']) {
    t.equal(ipv6Bytes(bad), null, `refused: ${JSON.stringify(bad)}`)
  }
  t.same([...addressBytes('::ffff:10.1.2.3')!], [10, 1, 2, 3], 'a mapped address is its IPv4 bytes')
  t.same([...addressBytes('10.1.2.3')!], [10, 1, 2, 3])
  t.equal(addressBytes('2001:db8::1')!.length, 16)
  t.equal(addressBytes('300.1.2.3'), null)
  t.same([...ipv6Bytes('fe80::1%eth0')!], [...ipv6Bytes('fe80::1')!], 'the zone is not part of the address')
})

t.test('clients are counted by IPv4 address or IPv6 /64', async t => {
  t.equal(clientPrefix('198.51.100.4'), '198.51.100.4')
  t.equal(clientPrefix('::ffff:198.51.100.4'), '198.51.100.4', 'one IPv4 client whatever the socket family')
  t.equal(clientPrefix('2001:db8:1:2:aaaa::1'), '2001:db8:1:2::/64')
  t.equal(clientPrefix('2001:db8:1:2:bbbb::9'), clientPrefix('2001:db8:1:2:aaaa::1'), 'one /64, one client')
  t.not(clientPrefix('2001:db8:1:3::1'), clientPrefix('2001:db8:1:2::1'))
})

t.test('binding the dual-stack wildcard on a host without IPv6 falls back to 0.0.0.0 once', async t => {
  for (const code of ['EAFNOSUPPORT', 'EADDRNOTAVAIL']) {
    const tried: string[] = []
    const fallbacks: Error[] = []
    const bound = await bindDualStack('::', async host => {
      tried.push(host)
      if (host === '::') throw errno(code)
      return `bound ${host}`
    }, err => { fallbacks.push(err) })
    t.equal(bound, 'bound 0.0.0.0', code)
    t.same(tried, ['::', '0.0.0.0'])
    t.equal(fallbacks.length, 1, 'the fallback is reported')
    t.ok(isNoIpv6Error(fallbacks[0]))
  }
})

t.test('other bind failures and explicit addresses are never rewritten', async t => {
  const tried: string[] = []
  await t.rejects(bindDualStack('::', async host => { tried.push(host); throw errno('EADDRINUSE') }, () => t.fail('no fallback')), { code: 'EADDRINUSE' })
  await t.rejects(bindDualStack('::1', async host => { tried.push(host); throw errno('EADDRNOTAVAIL') }, () => t.fail('no fallback')), { code: 'EADDRNOTAVAIL' })
  t.same(tried, ['::', '::1'], 'one attempt each')
})

t.test('the dual-stack wildcard binds here and accepts IPv4 and IPv6 clients', async t => {
  const server = net.createServer(socket => { socket.end(socket.remoteAddress ?? '') })
  const host = await bindDualStack('::', async h => await new Promise<string>((resolve, reject) => {
    server.once('error', reject)
    server.listen({ host: h, port: 0 }, () => { server.off('error', reject); resolve(h) })
  }), () => {})
  t.teardown(() => new Promise<void>(resolve => server.close(() => resolve())))
  t.equal(host, '::', 'this host has IPv6')
  const port = (server.address() as net.AddressInfo).port
  const ask = (address: string): Promise<string> => new Promise((resolve, reject) => {
    const s = net.connect({ host: address, port })
    let text = ''
    s.on('data', (c: Buffer) => { text += c.toString() })
    s.on('end', () => resolve(text))
    s.on('error', reject)
  })
  t.equal(plainAddress(await ask('127.0.0.1')), '127.0.0.1', 'an IPv4 client')
  t.equal(await ask('::1'), '::1', 'an IPv6 client')
})
