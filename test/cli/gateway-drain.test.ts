/**
 * `cloud-connect gateway drain|undrain GATEWAY_ID`, spawned as an operator runs it, against an
 * embedded database directory that holds a gateway row as control writes it at a hello.
 */
import t from 'tap'
import { embeddedCli } from '../helpers/cli-process.ts'

t.test('gateway drain/undrain on the embedded database: a line saying what happens, exit 2 for an unknown id', async t => {
  const { run: cli, open } = embeddedCli(t, 'cc-drain-')
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

  const help = cli(['gateway', 'drain', '--help'])
  t.equal(help.status, 0)
  t.match(help.stdout, /Usage: cloud-connect gateway drain GATEWAY_ID/)

  const missing = cli(['gateway', 'drain', 'gw-nobody'])
  t.equal(missing.status, 2, 'unknown gateway: exit 2')
  t.equal(missing.stderr, 'cloud-connect gateway: no gateway with the id "gw-nobody"\n', 'one line')
  t.equal(cli(['gateway', 'drain']).status, 2, 'no id: exit 2')
  t.equal(cli(['gateway', 'drain', 'gw-b', 'extra']).status, 2, 'an extra argument: exit 2')

  const drained = cli(['gateway', 'drain', 'gw-b'])
  t.equal(drained.status, 0, drained.stderr)
  t.equal(drained.stdout, 'gateway gw-b is draining: no new placements; its 0 placed instance(s) move to other gateways at the next fleet sweep\n')
  t.equal(await drainingOf('gw-b'), true, 'stored')

  const undrained = cli(['gateway', 'undrain', 'gw-b'])
  t.equal(undrained.status, 0, undrained.stderr)
  t.equal(undrained.stdout, 'gateway gw-b takes new placements again (0 placed instance(s))\n')
  t.equal(await drainingOf('gw-b'), false, 'eligible again')
})
