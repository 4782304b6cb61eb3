/** The control <-> gateway contract: messages, validators, errors (see messages.ts). */
export * from './messages.ts'
export * from './errors.ts'
export * from './schemas.ts'
