/**
 * The layering, enforced: an ESLint rule that resolves each relative import against the importing
 * file and refuses the imports a layer may not make.
 *
 *   proto/            imports nothing of ours outside proto/ (shared wire formats and contracts)
 *   gateway/          never control/ (they talk over the internal RPC only), nor agent/ or cli/
 *   control/          never gateway/ (same reason), nor agent/ or cli/
 *   control/routes/   never control/db/ directly (through services)
 *   agent/            never control/ or cli/
 */
import path from 'node:path'

const ROOT = path.dirname(new URL(import.meta.url).pathname)

/** [importer's directory, forbidden target directories, why] */
export const LAYERS = [
  ['proto', ['gateway', 'control', 'agent', 'cli', 'bench', 'test'], 'proto/ is shared: it imports nothing of ours outside proto/'],
  ['gateway', ['control', 'agent', 'cli'], 'gateway/ reaches control only over the internal RPC'],
  ['control/routes', ['control/db'], 'routes reach the database through services'],
  ['control', ['gateway', 'agent', 'cli'], 'control/ reaches gateways only over the internal RPC'],
  ['agent', ['control', 'cli'], 'the agent reaches control only over the public API'],
]

function inside (file, dir) {
  const rel = path.relative(path.join(ROOT, dir), file)
  return rel !== '' && !rel.startsWith('..') && !path.isAbsolute(rel)
}

const rule = {
  meta: { type: 'problem', messages: { layer: '{{from}}/ may not import {{to}}/: {{why}}' }, schema: [] },
  create (context) {
    const file = context.filename ?? context.getFilename()
    const layers = LAYERS.filter(([from]) => inside(file, from))
    if (layers.length === 0) return {}
    const check = (node, source) => {
      if (typeof source !== 'string' || !source.startsWith('.')) return
      const target = path.resolve(path.dirname(file), source)
      for (const [from, forbidden, why] of layers) {
        const to = forbidden.find(dir => inside(target, dir))
        if (to !== undefined) { context.report({ node, messageId: 'layer', data: { from, to, why } }); return }
      }
    }
    return {
      ImportDeclaration: node => check(node.source, node.source.value),
      ExportNamedDeclaration: node => { if (node.source != null) check(node.source, node.source.value) },
      ExportAllDeclaration: node => check(node.source, node.source.value),
      ImportExpression: node => { if (node.source.type === 'Literal') check(node.source, node.source.value) },
    }
  },
}

export default { rules: { imports: rule } }
