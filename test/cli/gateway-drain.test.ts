/**
 * `cloud-connect gateway drain|undrain GATEWAY_ID`, spawned as an operator runs it, against an
 * embedded database directory that holds a gateway row as control writes it at a hello.
 */
import t from 'tap'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createDb, type Db } from '../../control/db/knex.ts'
import { migrateLatest } from '../../control/db/migrate.ts'

const BIN = fileURLToPath(new URL('../../bin/cloud-connect.js', import.meta.url))

function cli (dataDir: string, args: string[]): { status: number | null, stdout: string, stderr: string } {
  const env: NodeJS.ProcessEnv = { ...process.env, CC_DATA_DIR: dataDir, CC_LOG_LEVEL: 'silent' }
  delete env.DATABASE_URL
  const r = spawnSync(process.execPath, [BIN, ...args], { env, encoding: 'utf8', timeout: 120_000 })
  return { status: r.status, stdout: r.stdout, stderr: r.stderr }
}

t.test('gateway drain/undrain on the embedded database: a line saying what happens, exit 2 for an unknown id', async t => {
  const dataDir = mkdtempSync(join(tmpdir(), 'cc-drain-'))
  t.teardown(() => { rmSync(dataDir, { recursive: true, force: true }) })
  const open = async (): Promise<Db> => {
    const db = createDb({ dataDir })
    await migrateLatest(db)
    return db
  }
  const drainingOf = async (id: string): Promise<boolean> => {
    const db = await open()
    try {
      return (await db('gateways').where({ id }).first('draining') as { draining: boolean }).draining
    } finally {
      await db.destroy()
    }
  }

  const db = await open()
  await db('gateways').insert({ id: 'gw-b', public_key: 'k'.repeat(43) + '=', endpoint: 'gw-b.example.test:51820', listen_port: 51820, protocol: 1, hello_at: new Date() })
  await db.destroy()
  t.equal(await drainingOf('gw-b'), false, 'a gateway starts eligible')

  const help = cli(dataDir, ['gateway', 'drain', '--help'])
  t.equal(help.status, 0)
  t.match(help.stdout, /Usage: cloud-connect gateway drain GATEWAY_ID/)

  const missing = cli(dataDir, ['gateway', 'drain', 'gw-nobody'])
  t.equal(missing.status, 2, 'unknown gateway: exit 2')
  t.equal(missing.stderr, 'cloud-connect gateway: no gateway with the id "gw-nobody"\n', 'one line')
  t.equal(cli(dataDir, ['gateway', 'drain']).status, 2, 'no id: exit 2')
  t.equal(cli(dataDir, ['gateway', 'drain', 'gw-b', 'extra']).status, 2, 'an extra argument: exit 2')

  const drained = cli(dataDir, ['gateway', 'drain', 'gw-b'])
  t.equal(drained.status, 0, drained.stderr)
  t.equal(drained.stdout, 'gateway gw-b is draining: no new placements; its 0 placed instance(s) move to other gateways at the next fleet sweep\n')
  t.equal(await drainingOf('gw-b'), true, 'stored')

  const undrained = cli(dataDir, ['gateway', 'undrain', 'gw-b'])
  t.equal(undrained.status, 0, undrained.stderr)
  t.equal(undrained.stdout, 'gateway gw-b takes new placements again (0 placed instance(s))\n')
  t.equal(await drainingOf('gw-b'), false, 'eligible again')
})
