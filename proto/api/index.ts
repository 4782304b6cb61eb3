/** The public REST contract (spec: "Cloud API Specification"): types only, no runtime beyond constants. */
export * from './errors.ts'
export * from './auth.ts'
export * from './user.ts'

/** Every route of the public API is under this prefix (spec: "Base URL"). */
export const API_PREFIX = '/v1'
