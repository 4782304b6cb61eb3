import t from 'tap'
import fs from 'node:fs'
import path from 'node:path'
import { writeAtomic, writeAtomicSync } from '../../gateway/atomic-write.ts'
import { tempDir } from './edge/helpers.ts'

for (const [name, write] of [
  ['async', writeAtomic],
  ['sync', async (file: string, contents: string, mode?: number) => { writeAtomicSync(file, contents, mode) }],
] as const) {
  t.test(`${name} write over an old file: the new contents whole, the mode exact, no temporary file left`, async t => {
    const dir = tempDir(t, 'cc-atomic-')
    const file = path.join(dir, 'state.json')
    fs.writeFileSync(file, 'old', { mode: 0o644 })
    const umask = process.umask(0o077)
    try {
      await write(file, 'new', 0o640)
    } finally {
      process.umask(umask)
    }
    t.equal(fs.readFileSync(file, 'utf8'), 'new')
    t.equal(fs.statSync(file).mode & 0o777, 0o640, 'the umask neither narrows nor widens the mode')
    t.same(fs.readdirSync(dir), ['state.json'])
  })

  t.test(`${name} write that fails at the rename: the old file stays whole and the temporary file is removed`, async t => {
    const dir = tempDir(t, 'cc-atomic-')
    const file = path.join(dir, 'state')
    fs.mkdirSync(file) // a directory in the way: rename(2) refuses to put a file over it
    fs.writeFileSync(path.join(file, 'inside'), 'old')
    await t.rejects(write(file, 'new'))
    t.same(fs.readdirSync(dir), ['state'], 'no temporary file left beside it')
    t.equal(fs.readFileSync(path.join(file, 'inside'), 'utf8'), 'old')
  })
}
