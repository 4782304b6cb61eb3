/** Polls `check` every `pollMs` until it holds; throws naming `what` after `timeoutMs`. */
export async function until (what: string, check: () => boolean, timeoutMs = 5_000, pollMs = 10): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, pollMs))
  }
}
