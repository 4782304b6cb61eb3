/**
 * "Write a temporary file, then rename it over the old one" for the gateway's state files (stored
 * certificates, the last snapshot, the peers' endpoints): rename(2) replaces the name in one step,
 * so a reader or a crash sees the old whole file or the new one, never half of either.
 *
 * The temporary name is fresh (random, created exclusively): two writers of one file never write
 * into each other's temporary file. A failed write removes its temporary file and throws.
 * `mode`, when given, is set exactly (the umask neither widens nor narrows it).
 */
import fs from 'node:fs/promises'
import { chmodSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { randomBytes } from 'node:crypto'

function temporaryName (file: string): string {
  return `${file}.${randomBytes(6).toString('hex')}.tmp`
}

export async function writeAtomic (file: string, contents: string, mode?: number): Promise<void> {
  const tmp = temporaryName(file)
  try {
    await fs.writeFile(tmp, contents, { mode, flag: 'wx' })
    if (mode !== undefined) await fs.chmod(tmp, mode)
    await fs.rename(tmp, file)
  } catch (err) {
    await fs.rm(tmp, { force: true })
    throw err
  }
}

/** writeAtomic for the paths that must finish before they return (shutdown, a synchronous save). */
export function writeAtomicSync (file: string, contents: string, mode?: number): void {
  const tmp = temporaryName(file)
  try {
    writeFileSync(tmp, contents, { mode, flag: 'wx' })
    if (mode !== undefined) chmodSync(tmp, mode)
    renameSync(tmp, file)
  } catch (err) {
    rmSync(tmp, { force: true })
    throw err
  }
}
