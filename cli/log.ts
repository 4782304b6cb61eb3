/** The root pino logger of a CLI program: JSON lines to stdout, level from `--log-level`. */
import { pino, type Logger, type DestinationStream } from 'pino'
import { CliError } from './errors.ts'

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const
export type LogLevel = typeof LOG_LEVELS[number]

export function parseLogLevel (text: string | undefined, fallback: LogLevel = 'info'): LogLevel {
  if (text === undefined) return fallback
  if (!(LOG_LEVELS as readonly string[]).includes(text)) {
    throw new CliError(`--log-level must be one of ${LOG_LEVELS.join(', ')} (got '${text}')`, 2)
  }
  return text as LogLevel
}

/** Creates the root logger; modules get children of it (`logger.child({ module: 'wireguard' })`). */
export function createLogger (options: { level?: LogLevel, name?: string, destination?: DestinationStream } = {}): Logger {
  return pino({
    name: options.name ?? 'cloud-connect',
    level: options.level ?? 'info',
    base: { pid: process.pid },
  }, options.destination ?? pino.destination({ dest: 1, sync: true }))
}
