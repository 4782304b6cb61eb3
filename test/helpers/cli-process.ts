/**
 * `bin/cloud-connect.js` as a child process for the CLI tests (killed at teardown, its stdout and
 * stderr collected in one text), and the JSON API as those tests speak it.
 */
import type { Test } from 'tap'
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createDb, type Db } from '../../control/db/knex.ts'
import { migrateLatest } from '../../control/db/migrate.ts'

export const REPO_ROOT = resolve(fileURLToPath(import.meta.url), '../../..')
export const CLI = join(REPO_ROOT, 'bin/cloud-connect.js')

export interface CliProcess { child: ChildProcess, output: { text: string }, exited: Promise<number | null> }

/** `cloud-connect <args>` with `env`; SIGKILLed at teardown if still running. */
export function spawnCli (t: Pick<Test, 'teardown'>, args: string[], env: NodeJS.ProcessEnv): CliProcess {
  const child = spawn(process.execPath, [CLI, ...args], { cwd: REPO_ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] })
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL') })
  const output = { text: '' }
  child.stdout!.setEncoding('utf8')
  child.stderr!.setEncoding('utf8')
  child.stdout!.on('data', (chunk: string) => { output.text += chunk })
  child.stderr!.on('data', (chunk: string) => { output.text += chunk })
  const exited = new Promise<number | null>(resolve => { child.on('exit', code => { resolve(code) }) })
  return { child, output, exited }
}

/** A data directory of its own (removed at teardown) for operator commands on the embedded database. */
export interface EmbeddedCli {
  dataDir: string
  /** `cloud-connect <args>` run to its end on it (DATABASE_URL unset, logs silent). */
  run (args: string[]): { status: number | null, stdout: string, stderr: string }
  /** Its database, migrated: a new handle each call, closed by the caller before the next command. */
  open (): Promise<Db>
}

export function embeddedCli (t: Pick<Test, 'teardown'>, prefix: string): EmbeddedCli {
  const dataDir = mkdtempSync(join(tmpdir(), prefix))
  t.teardown(() => { rmSync(dataDir, { recursive: true, force: true }) })
  return {
    dataDir,
    run (args) {
      const env: NodeJS.ProcessEnv = { ...process.env, CC_DATA_DIR: dataDir, CC_LOG_LEVEL: 'silent' }
      delete env.DATABASE_URL
      const r = spawnSync(process.execPath, [CLI, ...args], { env, encoding: 'utf8', timeout: 120_000 })
      return { status: r.status, stdout: r.stdout, stderr: r.stderr }
    },
    async open () {
      const db = createDb({ dataDir })
      await migrateLatest(db)
      return db
    },
  }
}

/** A JSON request (`token`: a bearer token); the reply's status and parsed body (undefined when empty). */
export async function json (url: string, method = 'GET', body?: unknown, token?: string): Promise<{ status: number, body: any }> { // eslint-disable-line @typescript-eslint/no-explicit-any
  const headers: Record<string, string> = {}
  if (body !== undefined) headers['content-type'] = 'application/json'
  if (token !== undefined) headers.authorization = `Bearer ${token}`
  const res = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) })
  const text = await res.text()
  return { status: res.status, body: text === '' ? undefined : JSON.parse(text) }
}
