// Builds the project's two N-API modules with the C compiler and the headers of the running Node
// (run by `npm ci`/`npm install` as the postinstall step; `node bin/build-native.mjs` by hand):
//   proto/noise/native/transport.c -> the WireGuard data path's ChaCha20-Poly1305 through Node's
//     OpenSSL (without it: sodium-native, proto/noise/native-aead.ts);
//   gateway/wireguard/native/udp.c (+ address.c) -> the WireGuard endpoint's batched UDP socket,
//     recvmmsg, sendmmsg and UDP GSO, Linux only (without it: node:dgram, gateway/wireguard/socket.ts).
// Never fails the install: a module that cannot be built is named in one line with the reason, and
// the gateway uses its fallback.
import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const modules = [
  { source: 'proto/noise/native/transport.c', what: 'native transport crypto', fallback: 'the data path uses sodium-native' },
  { source: 'gateway/wireguard/native/udp.c', also: ['gateway/wireguard/native/address.c'], what: 'native batched UDP', fallback: 'the WireGuard socket uses node:dgram', linuxOnly: true },
]
const cc = process.env.CC || 'cc'
const includes = [
  join(dirname(process.execPath), '..', 'include', 'node'),
  process.config.variables.node_prefix ? join(process.config.variables.node_prefix, 'include', 'node') : '',
].filter(dir => dir !== '' && existsSync(join(dir, 'node_api.h')))

for (const { source, also, what, fallback, linuxOnly } of modules) {
  const reason = build(source, also ?? [], linuxOnly === true)
  console.log(reason === null ? `${what} built: ${output(source)}` : `${what} not built (${reason}); ${fallback}`)
}

function output (source) {
  return join(root, dirname(source), 'build', source.split('/').pop().replace(/\.c$/, '.node'))
}

/** Null when built, else why not. `also`: more C files linked into the module. */
function build (source, also, linuxOnly) {
  if (linuxOnly && process.platform !== 'linux') return `${process.platform} is not Linux`
  if (includes.length === 0) return `no Node headers (node_api.h) next to ${process.execPath}`
  const out = output(source)
  mkdirSync(dirname(out), { recursive: true })
  try {
    execFileSync(cc, ['-O2', '-Wall', '-Wextra', '-shared', '-fPIC', `-I${includes[0]}`, '-o', out, join(root, source), ...also.map(file => join(root, file))], { stdio: ['ignore', 'ignore', 'pipe'] })
    return null
  } catch (err) {
    return err.code === 'ENOENT' ? `no C compiler "${cc}"` : String(err.stderr ?? err.message).trim().split('\n')[0]
  }
}
