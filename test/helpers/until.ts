/**
 * Polls `check` every `pollMs` until it holds; throws naming `what` after `timeoutMs`. Answers the
 * milliseconds it waited. (For a probe that yields a value, see lab/process.ts waitUntil.)
 */
export async function until (what: string, check: () => boolean | Promise<boolean>, timeoutMs = 5_000, pollMs = 10): Promise<number> {
  const start = Date.now()
  while (!await check()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, pollMs))
  }
  return Date.now() - start
}
