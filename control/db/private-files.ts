/**
 * Keeping CC_DATA_DIR private to the service's own user. It holds the embedded database (emails,
 * password hashes, instance rows in its tables and WAL), token signing keys, the gateway secret
 * and mail not yet sent.
 *
 * PGlite writes through Emscripten's NODEFS, which does not follow Postgres's file modes: initdb's
 * files are chmod'ed 0666, directories are created 0777 minus the umask, some files Postgres opens
 * later get no mode at all (0666 minus the umask). So: the directories are made 0700 before
 * anything is written, the process umask becomes 077 (files and directories created later are
 * private whoever creates them), and the PGlite tree is stripped of group and other bits once
 * PGlite has opened it.
 */
import { chmodSync, existsSync, lstatSync, mkdirSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import { isMainThread } from 'node:worker_threads'

/** Bits nobody but the owner may have on anything under the data directory. */
const GROUP_AND_OTHER = 0o077
/** Upper bound on the entries one walk visits (a PGlite directory holds about a thousand). */
const MAX_WALK_ENTRIES = 200_000

/** Creates `dir` (and missing parents) and makes `dir` itself 0700, whatever it was before. */
export function ensurePrivateDirectory (dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 })
  chmodSync(dir, 0o700)
}

/**
 * Files and directories this process creates from now on get no group or other bits. The umask
 * is per process and cannot be set from a worker thread: there only the explicit modes apply.
 */
export function usePrivateUmask (): void {
  if (isMainThread) process.umask(process.umask() | GROUP_AND_OTHER)
}

/**
 * Removes group and other bits from `root` and everything below it (symbolic links are neither
 * followed nor changed). Returns how many entries were changed. Missing `root`: nothing to do.
 */
export function restrictTree (root: string): number {
  let changed = 0
  let visited = 0
  const stack = [root]
  while (stack.length > 0 && visited < MAX_WALK_ENTRIES) {
    const path = stack.pop()!
    visited++
    let stat
    try {
      stat = lstatSync(path)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue // removed meanwhile (a WAL segment recycled)
      throw err
    }
    if (stat.isSymbolicLink()) continue
    if ((stat.mode & GROUP_AND_OTHER) !== 0) {
      chmodSync(path, stat.mode & 0o700)
      changed++
    }
    if (stat.isDirectory()) {
      for (const entry of readdirSync(path)) stack.push(join(path, entry))
    }
  }
  return changed
}

/** Subdirectories of the data directory whose whole content is secret (PGlite's is done on open). */
const SECRET_SUBDIRECTORIES = ['outbox']
/** Subdirectories closed to others whose files keep the modes their writer chose (tls: ca.crt is 0644). */
const CLOSED_SUBDIRECTORIES = ['tls', 'pglite']

/**
 * At start-up: the data directory 0700, its own files and the secret subdirectories private, the
 * other known subdirectories closed, and a private umask for everything written from now on.
 */
export function makeDataDirectoryPrivate (dataDir: string): void {
  ensurePrivateDirectory(dataDir)
  usePrivateUmask()
  for (const entry of readdirSync(dataDir)) {
    const path = join(dataDir, entry)
    const stat = lstatSync(path)
    if (stat.isFile() && (stat.mode & GROUP_AND_OTHER) !== 0) chmodSync(path, stat.mode & 0o700)
  }
  for (const name of SECRET_SUBDIRECTORIES) restrictTree(join(dataDir, name))
  for (const name of CLOSED_SUBDIRECTORIES) {
    const path = join(dataDir, name)
    if (existsSync(path) && lstatSync(path).isDirectory()) chmodSync(path, 0o700)
  }
}
