/** The RPC contract's validators: what each message must look like, and what they refuse. */
import t from 'tap'
import {
  RPC_PROTOCOL_VERSION, RpcError, WIREGUARD_KEY, validateHello, validateHelloReply, validateReport, validateReportReply, validateSnapshot,
  type ConfigSnapshot, type GatewayHello, type GatewayReport,
} from '../../../proto/rpc/index.ts'

// The spec's example WireGuard key ("Instance Management Endpoints", server_public_key).
const KEY = '1y8JgBgNarojHK12KYbAAy+7HqZq2HGsE0Qw24toBXo='

const snapshot = (): ConfigSnapshot => ({
  version: 3,
  gateway: { address: '10.100.0.1', listenPort: 51820, publicKey: KEY, endpoint: 'connect.erugo.cloud:51820' },
  peers: [{ instanceId: 'inst_abc', publicKey: 'Vo/MxSorIa0fdOOC9XpTr7lpn+zSIO8Ur2sZkJkYuHI=', tunnelIp: '10.100.0.42', hostnames: ['myfiles.erugo.cloud', 'share.example.com'], port: 80 }],
})

const hello = (): GatewayHello => ({ protocol: RPC_PROTOCOL_VERSION, gatewayId: 'gw-1', publicKey: KEY, endpoint: '[2001:db8::1]:51820', listenPort: 51820 })

const report = (): GatewayReport => ({
  protocol: RPC_PROTOCOL_VERSION,
  gatewayId: 'gw-1',
  sentAt: '2026-03-01T12:00:00.000Z',
  full: true,
  peers: [{ publicKey: KEY, instanceId: 'inst_abc', lastHandshakeAt: '2026-03-01T11:59:00.000Z', lastRxAt: null, endpoint: '198.18.0.2:40000', rxBytes: 10, txBytes: 20 }],
  certificates: [{ hostname: 'myfiles.erugo.cloud', state: 'failing', lastError: 'rate limited', nextRetryAt: '2026-03-01T13:00:00.000Z' }],
})

/** The field a validator names when it refuses `value`, or 'accepted'. */
function refused (validate: (v: unknown) => unknown, value: unknown): string {
  try {
    validate(value)
    return 'accepted'
  } catch (err) {
    if (!(err instanceof RpcError)) return `threw ${String(err)}`
    if (err.code !== 'VALIDATION_ERROR') return `code ${err.code}`
    return String(err.details.field)
  }
}

t.test('valid messages pass unchanged', async t => {
  t.same(validateSnapshot(snapshot()), snapshot())
  t.same(validateHello(hello()), hello())
  t.same(validateHello({ ...hello(), endpoint: null }), { ...hello(), endpoint: null }, 'endpoint may be unknown')
  t.same(validateReport(report()), report())
  t.same(validateHelloReply({ protocol: 1, gatewayId: 'gw-1', reportIntervalMs: 5000, configVersion: 0 }), { protocol: 1, gatewayId: 'gw-1', reportIntervalMs: 5000, configVersion: 0 })
  t.same(validateReportReply({ peers: 1, certificates: 0 }), { peers: 1, certificates: 0 })
  const empty = { ...snapshot(), peers: [] }
  t.same(validateSnapshot(empty), empty, 'no peers is a valid configuration')
})

t.test('unknown fields are dropped (forward compatible), not refused', async t => {
  const out = validateSnapshot({ ...snapshot(), extra: 1, peers: [{ ...snapshot().peers[0], weight: 3 }] }) as unknown as Record<string, unknown>
  t.notOk('extra' in out)
  t.notOk('weight' in (out.peers as Array<Record<string, unknown>>)[0])
})

t.test('hostnames are normalised to lower case', async t => {
  t.same(validateSnapshot({ ...snapshot(), peers: [{ ...snapshot().peers[0], hostnames: ['MyFiles.Erugo.Cloud'] }] }).peers[0].hostnames, ['myfiles.erugo.cloud'])
})

t.test('snapshot: each bad field is named', async t => {
  const peer = snapshot().peers[0]
  const cases: Array<[string, unknown, string]> = [
    ['negative version', { ...snapshot(), version: -1 }, 'version'],
    ['fractional version', { ...snapshot(), version: 1.5 }, 'version'],
    ['no gateway', { ...snapshot(), gateway: undefined }, 'gateway'],
    ['gateway address with prefix', { ...snapshot(), gateway: { address: '10.100.0.1/16', listenPort: 1 } }, 'gateway.address'],
    ['gateway IPv6 address', { ...snapshot(), gateway: { address: 'fd00::1', listenPort: 1 } }, 'gateway.address'],
    ['gateway endpoint without port', { ...snapshot(), gateway: { address: '10.100.0.1', listenPort: 1, endpoint: 'connect.erugo.cloud' } }, 'gateway.endpoint'],
    ['peers not an array', { ...snapshot(), peers: {} }, 'peers'],
    ['short key', { ...snapshot(), peers: [{ ...peer, publicKey: KEY.slice(1) }] }, 'peers[0].publicKey'],
    ['non-canonical key', { ...snapshot(), peers: [{ ...peer, publicKey: KEY.slice(0, 42) + 'B=' }] }, 'peers[0].publicKey'],
    ['bad tunnel IP', { ...snapshot(), peers: [{ ...peer, tunnelIp: '10.100.0.256' }] }, 'peers[0].tunnelIp'],
    ['bad hostname', { ...snapshot(), peers: [{ ...peer, hostnames: ['under_score.example.com'] }] }, 'peers[0].hostnames[0]'],
    ['hostname with port', { ...snapshot(), peers: [{ ...peer, hostnames: ['a.example.com:443'] }] }, 'peers[0].hostnames[0]'],
    ['port 0', { ...snapshot(), peers: [{ ...peer, port: 0 }] }, 'peers[0].port'],
    ['port too large', { ...snapshot(), peers: [{ ...peer, port: 65536 }] }, 'peers[0].port'],
    ['missing instance id', { ...snapshot(), peers: [{ ...peer, instanceId: undefined }] }, 'peers[0].instanceId'],
    ['instance id with a slash', { ...snapshot(), peers: [{ ...peer, instanceId: '../x' }] }, 'peers[0].instanceId'],
    ['allowedIPs without length', { ...snapshot(), peers: [{ ...peer, allowedIPs: ['10.100.0.42'] }] }, 'peers[0].allowedIPs[0]'],
    ['too many hostnames', { ...snapshot(), peers: [{ ...peer, hostnames: Array.from({ length: 65 }, (_, i) => `h${i}.example.com`) }] }, 'peers[0].hostnames'],
    ['not an object', 'snapshot', ''],
  ]
  for (const [label, value, field] of cases) t.equal(refused(validateSnapshot, value), field, label)
})

t.test('hello and report: each bad field is named', async t => {
  const cases: Array<[string, (v: unknown) => unknown, unknown, string]> = [
    ['hello without protocol', validateHello, { ...hello(), protocol: undefined }, 'protocol'],
    ['hello bad key', validateHello, { ...hello(), publicKey: 'abc' }, 'publicKey'],
    ['hello endpoint port out of range', validateHello, { ...hello(), endpoint: 'gw.example.com:70000' }, 'endpoint'],
    ['hello endpoint missing (must be null or host:port)', validateHello, { ...hello(), endpoint: undefined }, 'endpoint'],
    ['hello gateway id with spaces', validateHello, { ...hello(), gatewayId: 'gw 1' }, 'gatewayId'],
    ['report sentAt not a time', validateReport, { ...report(), sentAt: 'now' }, 'sentAt'],
    ['report negative bytes', validateReport, { ...report(), peers: [{ ...report().peers[0], rxBytes: -1 }] }, 'peers[0].rxBytes'],
    ['report handshake not a time', validateReport, { ...report(), peers: [{ ...report().peers[0], lastHandshakeAt: 'yesterday' }] }, 'peers[0].lastHandshakeAt'],
    ['report unknown certificate state', validateReport, { ...report(), certificates: [{ hostname: 'a.example.com', state: 'expired' }] }, 'certificates[0].state'],
    ['report without full flag', validateReport, { ...report(), full: undefined }, 'full'],
    ['hello reply interval too small', validateHelloReply, { protocol: 1, gatewayId: 'g', reportIntervalMs: 1, configVersion: 0 }, 'reportIntervalMs'],
  ]
  for (const [label, validate, value, field] of cases) t.equal(refused(validate, value), field, label)
})

t.test('WIREGUARD_KEY accepts exactly canonical 32-byte base64', async t => {
  t.ok(WIREGUARD_KEY.test(KEY))
  t.ok(WIREGUARD_KEY.test(Buffer.alloc(32, 0xff).toString('base64')))
  t.notOk(WIREGUARD_KEY.test(Buffer.alloc(31).toString('base64')))
  t.notOk(WIREGUARD_KEY.test(Buffer.alloc(33).toString('base64')))
  // The 43rd character holds the last 4 key bits and 2 zero bits (RFC 4648 3.5, canonical encoding): "B" sets one.
  t.notOk(WIREGUARD_KEY.test(KEY.slice(0, 42) + 'B='))
})

const entry = (over: Record<string, unknown> = {}): Record<string, unknown> => ({
  instanceId: 'inst_abc', at: '2026-03-01T11:59:58.123Z', method: 'GET', path: '/share/x', status: 200, bytesIn: 0, bytesOut: 1024, durationMs: 3, client: '203.0.113.9', ...over,
})

t.test('a report\'s access log: entries as gateways send them pass unchanged, unknown fields dropped', async t => {
  const accessLog = Array.from({ length: 10_000 }, (_, i) => entry({ path: `/${i}`, status: i % 1000, bytesOut: 2 ** 40 + i, durationMs: i }))
  const out = validateReport({ ...report(), accessLog: accessLog.map(e => ({ ...e, extra: 'dropped' })), accessLogDropped: 7 })
  t.same(out.accessLog, accessLog)
  t.notOk(out.accessLog!.some(e => 'extra' in e))
  t.equal(out.accessLogDropped, 7)
  t.equal(refused(validateReport, { ...report(), accessLog: [...accessLog, entry()] }), 'accessLog', 'at most 10,000 entries')
})

t.test('a report\'s access log: other forms are converted or refused as the schema says, naming the entry and field', async t => {
  const converted = validateReport({ ...report(), accessLog: [entry({ at: '2026-03-01T11:59:58Z', bytesIn: '12' }), entry({ at: '2026-02-30T10:00:00.000Z' })] }).accessLog!
  t.same(converted.map(e => [e.at, e.bytesIn]), [['2026-03-01T11:59:58.000Z', 12], ['2026-03-02T10:00:00.000Z', 0]], 'times normalised, numeric strings converted')
  const cases: Array<[string, unknown[], string]> = [
    ['not a time', [entry(), entry({ at: 'now' })], 'accessLog[1].at'],
    ['a method with a space', [entry({ method: 'G T' })], 'accessLog[0].method'],
    ['a status past 999', [entry(), entry(), entry({ status: 1000 })], 'accessLog[2].status'],
    ['a fractional byte count', [entry({ bytesIn: 1.5 })], 'accessLog[0].bytesIn'],
    ['a negative duration', [entry({ durationMs: -1 })], 'accessLog[0].durationMs'],
    ['no client', [entry({ client: undefined })], 'accessLog[0].client'],
    ['a path past 1024 characters', [entry({ path: '/' + 'x'.repeat(1024) })], 'accessLog[0].path'],
    ['an instance id with a space', [entry({ instanceId: 'inst abc' })], 'accessLog[0].instanceId'],
    ['not an object', [entry(), null], 'accessLog[1]'],
    ['a hole', [entry(), undefined], 'accessLog[1]'],
  ]
  for (const [label, accessLog, field] of cases) t.equal(refused(validateReport, { ...report(), accessLog }), field, label)
  t.throws(() => validateReport({ ...report(), accessLog: [entry({ method: 'G T' })] }), { message: /^report: accessLog\[0\]\.method: with value G T fails to match the required pattern/ })
})
