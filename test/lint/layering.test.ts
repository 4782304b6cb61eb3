// The layering rule (eslint.layering.js) fires on each forbidden import and stays quiet on allowed ones.
import t from 'tap'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { ESLint } from 'eslint'

const ROOT = resolve(fileURLToPath(import.meta.url), '../../..')
const eslint = new ESLint({ cwd: ROOT })

async function layerErrors (file: string, source: string): Promise<string[]> {
  const [result] = await eslint.lintText(`import { x } from '${source}'\nexport const y = x\n`, { filePath: join(ROOT, file) })
  return result.messages.filter(m => m.ruleId === 'layering/imports').map(m => m.message)
}

t.test('forbidden imports are errors naming both layers', async t => {
  const cases: Array<[string, string, RegExp]> = [
    ['gateway/edge/x.ts', '../../control/config.ts', /^gateway\/ may not import control\//],
    ['gateway/x.ts', '../control/app.ts', /^gateway\/ may not import control\//],
    ['gateway/edge/acme/x.ts', '../../../agent/agent.ts', /^gateway\/ may not import agent\//],
    ['control/services/x.ts', '../../gateway/index.ts', /^control\/ may not import gateway\//],
    ['control/routes/x.ts', '../db/knex.ts', /^control\/routes\/ may not import control\/db\//],
    ['proto/rpc/x.ts', '../../gateway/metrics.ts', /^proto\/ may not import gateway\//],
    ['proto/x.ts', '../control/config.ts', /^proto\/ may not import control\//],
    ['agent/x.ts', '../control/config.ts', /^agent\/ may not import control\//],
  ]
  for (const [file, source, message] of cases) {
    const errors = await layerErrors(file, source)
    t.equal(errors.length, 1, `${file} <- ${source}`)
    t.match(errors[0], message)
  }
})

t.test('allowed imports pass', async t => {
  const cases: Array<[string, string]> = [
    ['gateway/index.ts', './control/run.ts'], // the gateway's own control client, not control/
    ['gateway/edge/x.ts', '../../proto/rpc/index.ts'],
    ['control/routes/x.ts', '../services/index.ts'],
    ['control/services/x.ts', '../db/knex.ts'],
    ['agent/x.ts', '../gateway/wireguard/device.ts'],
    ['proto/rpc/x.ts', '../wire/ipv4.ts'],
    ['cli/commands/x.ts', '../../control/app.ts'],
    ['gateway/edge/x.ts', 'node:net'],
  ]
  for (const [file, source] of cases) t.same(await layerErrors(file, source), [], `${file} <- ${source}`)
})
