// Builds transport.c into build/transport.node with the C compiler and the headers of the running
// Node (run by `npm ci`/`npm install` as the postinstall step; `node proto/noise/native/build.mjs`
// by hand). Never fails the install: without a compiler or headers it says why in one line, and
// the data path uses sodium-native instead (proto/noise/native-aead.ts).
import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const out = join(here, 'build', 'transport.node')
const cc = process.env.CC || 'cc'
const includes = [
  join(dirname(process.execPath), '..', 'include', 'node'),
  process.config.variables.node_prefix ? join(process.config.variables.node_prefix, 'include', 'node') : '',
].filter(dir => dir !== '' && existsSync(join(dir, 'node_api.h')))

function skip (reason) {
  console.log(`native transport crypto not built (${reason}); the data path uses sodium-native`)
  process.exit(0)
}

if (includes.length === 0) skip(`no Node headers (node_api.h) next to ${process.execPath}`)
mkdirSync(dirname(out), { recursive: true })
try {
  execFileSync(cc, ['-O2', '-Wall', '-Wextra', '-shared', '-fPIC', `-I${includes[0]}`, '-o', out, join(here, 'transport.c')], { stdio: ['ignore', 'ignore', 'pipe'] })
} catch (err) {
  const detail = err.code === 'ENOENT' ? `no C compiler "${cc}"` : String(err.stderr ?? err.message).trim().split('\n')[0]
  skip(detail)
}
console.log(`native transport crypto built: ${out}`)
