import { CodedError } from '../errors.ts'

/**
 * The one error type a codec may throw. Untrusted bytes that fail a check surface as a WireError
 * with a stable `code` (used as the drop-reason counter name), never as a RangeError from Buffer.
 */
export class WireError extends CodedError {
  override readonly name = 'WireError'
}
