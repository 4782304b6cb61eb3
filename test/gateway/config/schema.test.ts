/**
 * The config file's peers are checked without joi when they have the common shape
 * (gateway/config/schema.ts plainPeers); anything else goes through the schema. Both paths must give
 * the same peers, and every rejection must still name the field.
 */
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { ConfigError, validateConfig } from '../../../gateway/config/schema.ts'
import { encodeKey, generatePrivateKey } from '../../../proto/noise/keys.ts'

const key = (): string => randomBytes(32).toString('base64')
const base = { privateKey: encodeKey(generatePrivateKey()), listenPort: 0 }

const variants = (): Array<Record<string, unknown>> => [
  { publicKey: key(), allowedIPs: ['10.64.0.1/32'] },
  { publicKey: key(), allowedIPs: ['10.64.1.0/24', '10.65.0.0/16'], tunnelIp: '10.64.1.9', hostnames: ['a.example.com', 'x-1.b2.example.org'], port: 8080, name: 'files' },
  { publicKey: key(), allowedIPs: ['10.64.0.2/32'], endpoint: '198.18.0.2:51820', persistentKeepalive: 25, presharedKey: key() },
  { publicKey: key(), allowedIPs: ['10.64.0.3/32'], endpoint: '[fd00::1]:51820', hostnames: [], name: 'p:3_x.y-z' },
]

t.test('peers of the common shape: the same validated peers as through the schema', async t => {
  const peers = variants()
  const fast = validateConfig({ ...base, peers })
  // A port given as text is valid to the schema (converted) but not plain: the whole list goes through joi.
  const viaSchema = validateConfig({ ...base, peers: [...peers, { publicKey: key(), allowedIPs: ['10.66.0.1/32'], port: '81' }] })
  t.equal(viaSchema.peers.at(-1)!.port, 81, 'the schema path converted the text port')
  t.same(fast.peers, viaSchema.peers.slice(0, -1), 'identical peers, defaults included')
  t.equal(fast.peers[0].port, 80)
  t.equal(fast.peers[0].persistentKeepalive, 0)
  t.same(fast.peers[0].hostnames, [])
  t.equal(fast.peers[0].name, 'peer0')
})

t.test('a bad peer among plain ones: the schema names its field', async t => {
  const cases: Array<[string, Record<string, unknown>, string]> = [
    ['upper-case hostname', { hostnames: ['Files.example.com'] }, 'peers[2].hostnames[0]'],
    ['unknown field', { allowedIps: ['10.70.0.1/32'] }, 'peers[2].allowedIps'],
    ['prefix without /len', { allowedIPs: ['10.70.0.1'] }, 'peers[2].allowedIPs[0]'],
    ['short key', { publicKey: key().slice(1) }, 'peers[2].publicKey'],
    ['port 0', { port: 0 }, 'peers[2].port'],
    ['name with a space', { name: 'a b' }, 'peers[2].name'],
    ['tunnel address with a prefix', { tunnelIp: '10.70.0.1/32' }, 'peers[2].tunnelIp'],
  ]
  for (const [what, change, field] of cases) {
    const peers = variants().slice(0, 2)
    peers.push({ publicKey: key(), allowedIPs: ['10.70.0.1/32'], ...change })
    let caught: unknown = null
    try { validateConfig({ ...base, peers }) } catch (err) { caught = err }
    t.ok(caught instanceof ConfigError, `${what}: rejected`)
    t.equal((caught as ConfigError).field, field, `${what}: names ${field}`)
  }
})
