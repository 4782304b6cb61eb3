/**
 * An error with a stable `code` that callers branch on and counters are named after (undici's
 * errors: one class per failure, the code never changes). Subclasses set `name`.
 */
export class CodedError<Code extends string = string> extends Error {
  readonly code: Code
  constructor (code: Code, message: string) {
    super(message)
    this.code = code
  }
}
