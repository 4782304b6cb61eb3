/**
 * The last snapshot on disk, so a gateway restarted while control is down serves what it served
 * before. Written atomically (temporary file + rename, mode 0600: it names every peer); a file
 * that does not validate is ignored with a warning rather than trusted.
 */
import { mkdirSync, readFileSync } from 'node:fs'
import { dirname } from 'node:path'
import type { Logger } from 'pino'
import { writeAtomicSync } from '../atomic-write.ts'
import { validateSnapshot, type ConfigSnapshot } from '../../proto/rpc/index.ts'

export class SnapshotStore {
  readonly path: string
  readonly #logger: Logger | undefined

  constructor (path: string, logger?: Logger) {
    this.path = path
    this.#logger = logger
  }

  load (): ConfigSnapshot | null {
    let text: string
    try {
      text = readFileSync(this.path, 'utf8')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.#logger?.warn({ path: this.path, err: (err as Error).message }, 'cannot read the stored snapshot')
      return null
    }
    try {
      return validateSnapshot(JSON.parse(text))
    } catch (err) {
      this.#logger?.warn({ path: this.path, err: (err as Error).message }, 'ignoring an invalid stored snapshot')
      return null
    }
  }

  save (snapshot: ConfigSnapshot): void {
    mkdirSync(dirname(this.path), { recursive: true })
    writeAtomicSync(this.path, JSON.stringify(snapshot), 0o600)
  }
}
