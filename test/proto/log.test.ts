// One key once per record: nested module loggers join their names, other bindings are replaced,
// never repeated (checked with a strict reader: JSON.parse would hide a repeated key).
import t from 'tap'
import pino from 'pino'
import { childLogger, moduleLogger } from '../../proto/log.ts'
import { parseLogLines, parseStrictJson } from '../helpers/strict-json.ts'

function capture (level = 'info'): { root: pino.Logger, lines: string[] } {
  const lines: string[] = []
  return { root: pino({ level, base: { pid: 1 } }, { write: (line: string) => { lines.push(line) } }), lines }
}

t.test('strict reader: a repeated key is an error, valid JSON parses as JSON.parse does', async t => {
  t.throws(() => parseStrictJson('{"module":"userspace","module":"udp"}'), /repeated key "module"/)
  t.throws(() => parseStrictJson('{"a":{"b":1,"b":2}}'), /repeated key "b"/)
  const text = '{"a":[1,-2.5e3,"x\\"y",{"b":null}],"c":true,"d":"\\u00e9"}'
  t.same(parseStrictJson(text), JSON.parse(text))
  t.throws(() => parseStrictJson('{"a":1}x'), /trailing/)
})

t.test('raw pino children repeat the module key; moduleLogger does not', async t => {
  const { root, lines } = capture()
  root.child({ module: 'userspace' }).child({ module: 'udp' }).info('raw')
  t.match(lines[0], /"module":"userspace","module":"udp"/, 'what plain child() writes')
  moduleLogger(moduleLogger(root, 'userspace'), 'udp').info({ port: 51820 }, 'joined')
  const record = parseStrictJson(lines[1]) as Record<string, unknown>
  t.equal(record.module, 'userspace/udp')
  t.equal(record.port, 51820)
  t.equal(lines[1].match(/"module"/g)?.length, 1, 'once in the line')
})

t.test('three levels, other bindings in between -> each key once, module the full path', async t => {
  const { root, lines } = capture()
  const edge = moduleLogger(moduleLogger(root, 'gateway'), 'edge')
  const relayed = childLogger(edge, { relay: 'in' })
  const again = childLogger(relayed, { relay: 'out' })
  moduleLogger(relayed, 'proxy').warn('from the relayed proxy')
  again.info('relay replaced')
  const { records, bad } = parseLogLines(lines.join(''))
  t.same(bad, [])
  t.match(records[0], { module: 'gateway/edge/proxy', relay: 'in', msg: 'from the relayed proxy' })
  t.match(records[1], { module: 'gateway/edge', relay: 'out' })
})

t.test('a child keeps its parent\'s level', async t => {
  const { root, lines } = capture('info')
  const quiet = moduleLogger(root, 'quiet')
  quiet.level = 'error'
  moduleLogger(quiet, 'inner').warn('dropped')
  moduleLogger(quiet, 'inner').error('kept')
  t.equal(lines.length, 1)
  t.match(lines[0], /"module":"quiet\/inner"/)
})
