/**
 * Settings from CC_* environment variables (and the agent's flags), validated once at start-up: each
 * value against its joi schema, and the first bad one stops start-up with one line naming it,
 * `CC_X: must be ... (got "...")`. Shared by control, the RPC listener, the gateway and the agent.
 */
import type Joi from 'joi'

/** A bad setting: `field` is the variable, flag or config path; the message is one line naming it. */
export class ConfigError extends Error {
  readonly field: string
  constructor (field: string, message: string) {
    super(field === '' ? message : `${field}: ${message}`)
    this.name = 'ConfigError'
    this.field = field
  }
}

/** Joi's message for a bad value without its label ("value" or "\"value\""). */
export function reason (error: Joi.ValidationError): string {
  return error.message.replace(/^"?value"? /, '')
}

/**
 * Validates one raw setting; returns the converted value or throws `Failure(source, ...)` (a
 * ConfigError unless the caller has its own subclass). The bad value is echoed unless `secret`.
 */
export function checkSetting (
  schema: Joi.Schema, raw: unknown, source: string, secret = false,
  Failure: new (field: string, message: string) => ConfigError = ConfigError,
): unknown {
  const { value, error } = schema.validate(raw, { errors: { wrap: { label: false } } })
  if (error !== undefined) throw new Failure(source, `${reason(error)}${secret ? '' : ` (got ${JSON.stringify(raw)})`}`)
  return value
}

export interface EnvOptions {
  /** Variables whose values are never echoed in an error. */
  secret?: Iterable<string>
  /** Values for variables the environment leaves unset or empty. */
  defaults?: Record<string, string | undefined>
}

/**
 * Validates every variable of `variables` from `env` (an empty value counts as unset) and returns
 * the values by name. Unknown CC_ variables are ignored: other programs share the prefix.
 */
export function loadEnv (variables: Record<string, Joi.Schema>, env: NodeJS.ProcessEnv, options: EnvOptions = {}): Record<string, unknown> {
  const secret = new Set(options.secret ?? [])
  const values: Record<string, unknown> = {}
  for (const [name, schema] of Object.entries(variables)) {
    const raw = env[name] === undefined || env[name] === '' ? options.defaults?.[name] : env[name]
    values[name] = checkSetting(schema, raw, name, secret.has(name))
  }
  return values
}

/** The variables and their defaults, one a line, for `--help`. */
export function describeEnv (variables: Record<string, Joi.Schema>): string[] {
  return Object.entries(variables).map(([name, schema]) => {
    const flags = (schema.describe() as { flags?: { default?: unknown, description?: string } }).flags
    const d = flags?.default ?? flags?.description?.replace(/^default /, '')
    return d === undefined ? `  ${name}` : `  ${name} (default ${String(d)})`
  })
}
