/**
 * Log formats of `cloud-connect start` as a person sees them: on a terminal (a pseudo-terminal from
 * util-linux `script`), readable lines with time, level, module and message; CC_LOG_FORMAT=json
 * gives JSON lines even there; a bad CC_LOG_FORMAT stops start-up with one line naming it.
 * (JSON when the output is a pipe, and no repeated key in any record: test/cli/start.test.ts.)
 */
import t, { type Test } from 'tap'
import { spawn, spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseLogLines } from '../helpers/strict-json.ts'
import { serviceEnv } from '../agent/service.ts'

const ROOT = resolve(fileURLToPath(import.meta.url), '../../..')
const CLI = join(ROOT, 'bin/cloud-connect.js')
const ANSI = /\x1b\[[0-9;]*[A-Za-z]/g

function env (t: Test, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const dataDir = mkdtempSync(join(tmpdir(), 'cc-logfmt-'))
  t.teardown(() => { rmSync(dataDir, { recursive: true, force: true }) })
  const out = serviceEnv(dataDir, {}, { TERM: 'xterm', ...extra })
  if (!('CC_LOG_FORMAT' in extra)) delete out.CC_LOG_FORMAT
  return out
}

/** `start` on a pseudo-terminal until it says it is ready (or 90 s), then Ctrl-C; answers what the terminal showed. */
async function startOnTerminal (t: Test, extra: Record<string, string> = {}): Promise<string> {
  // `script -qec CMD /dev/null`: CMD runs with a pseudo-terminal as its stdout.
  const child = spawn('script', ['-qec', `exec ${JSON.stringify(process.execPath)} ${JSON.stringify(CLI)} start`, '/dev/null'], { cwd: ROOT, env: env(t, extra), stdio: ['pipe', 'pipe', 'pipe'], detached: true })
  t.teardown(() => { if (child.exitCode === null) process.kill(-child.pid!, 'SIGKILL') })
  let text = ''
  child.stdout!.on('data', (c: Buffer) => { text += c.toString('utf8') })
  child.stderr!.on('data', (c: Buffer) => { text += c.toString('utf8') })
  const exited = new Promise<void>(resolve => { child.on('exit', () => { resolve() }) })
  const deadline = Date.now() + 90_000
  while (!/cloud-connect ready/.test(text) && Date.now() < deadline && child.exitCode === null) await new Promise(resolve => setTimeout(resolve, 50))
  child.stdin!.write('\x03') // Ctrl-C on the terminal: SIGINT to start, as a person stops it
  await Promise.race([exited, new Promise(resolve => setTimeout(resolve, 15_000))])
  return text.replace(ANSI, '').replace(/\r/g, '')
}

const scriptMissing = spawnSync('script', ['--version']).error !== undefined
if (scriptMissing) {
  if (process.env.CC_REQUIRE_INTEROP === '1') t.fail('util-linux `script` is required (CC_REQUIRE_INTEROP=1) but not installed')
  else t.comment('skipped: util-linux `script` (for a pseudo-terminal) is not installed')
} else {
  t.test('start on a terminal -> readable lines: time, level, module and message, fields on the same line', async t => {
    const text = await startOnTerminal(t)
    t.match(text, /cloud-connect ready/, 'it started')
    const lines = text.split('\n').filter(l => /^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\] [A-Z]+/.test(l))
    t.ok(lines.length > 3, `${lines.length} readable log lines`)
    t.notOk(text.split('\n').some(l => l.startsWith('{"level"')), 'no JSON record on the terminal')
    t.ok(lines.some(l => /\] INFO: control API listening \{.*"url":"http:\/\/127\.0\.0\.1:\d+"/.test(l)), 'level, message and its fields on one line')
    t.ok(lines.some(l => /\] [A-Z]+: [a-z-]+(\/[a-z-]+)*: \S/.test(l)), 'a module before the message')
    t.notOk(lines.some(l => /"(pid|hostname|module)":/.test(l)), 'pid, host and module not repeated among the fields')
    t.match(text, /\] INFO: stopped/, 'stopped cleanly, the last line written')
  })

  t.test('start on a terminal with CC_LOG_FORMAT=json -> JSON lines, each key once', async t => {
    const text = await startOnTerminal(t, { CC_LOG_FORMAT: 'json' })
    const { records, bad } = parseLogLines(text.split('\n').filter(l => l.startsWith('{')).join('\n'))
    t.same(bad, [])
    t.ok(records.some(r => r.msg === 'cloud-connect ready'))
    t.notOk(/^\[\d{4}-/m.test(text), 'no readable line')
  })
}

t.test('CC_LOG_FORMAT=yaml -> start-up stops with one line naming the variable', async t => {
  const run = spawnSync(process.execPath, [CLI, 'start'], { cwd: ROOT, env: env(t, { CC_LOG_FORMAT: 'yaml' }), encoding: 'utf8', timeout: 60_000 })
  t.equal(run.status, 2)
  t.match(run.stderr, /CC_LOG_FORMAT: must be one of json, pretty \(got 'yaml'\)/)
  t.equal(run.stderr.trim().split('\n').length, 1, 'one line')
})
