/**
 * The root pino logger of a CLI program. JSON lines by default; readable lines (time, level,
 * module, message, then the other fields on the same line) when the output is a terminal, or
 * always with CC_LOG_FORMAT=pretty (CC_LOG_FORMAT=json: JSON even on a terminal). Readable lines
 * are formatted in-process (pino-pretty's formatter, no worker thread) and written synchronously,
 * so nothing is lost when the process exits. Modules log through `moduleLogger(logger, 'name')`
 * (proto/log.ts): one `module` key per record, nested modules joined (`userspace/udp`).
 */
import { pino, type Logger, type DestinationStream } from 'pino'
import { prettyFactory } from 'pino-pretty'
import { isatty } from 'node:tty'
import { CliError } from './errors.ts'

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const
export type LogLevel = typeof LOG_LEVELS[number]

export const LOG_FORMATS = ['json', 'pretty'] as const
export type LogFormat = typeof LOG_FORMATS[number]

export function parseLogLevel (text: string | undefined, fallback: LogLevel = 'info'): LogLevel {
  if (text === undefined) return fallback
  if (!(LOG_LEVELS as readonly string[]).includes(text)) {
    throw new CliError(`--log-level must be one of ${LOG_LEVELS.join(', ')} (got '${text}')`, 2)
  }
  return text as LogLevel
}

/** CC_LOG_FORMAT; unset or empty: readable on a terminal, JSON otherwise. */
export function parseLogFormat (text: string | undefined, terminal: boolean): LogFormat {
  if (text === undefined || text === '') return terminal ? 'pretty' : 'json'
  if (!(LOG_FORMATS as readonly string[]).includes(text)) {
    throw new CliError(`CC_LOG_FORMAT: must be one of ${LOG_FORMATS.join(', ')} (got '${text}')`, 2)
  }
  return text as LogFormat
}

/** Fields shown in the line's head, or not at all. */
const PRETTY_IGNORED = 'pid,hostname,name,module'

/** Formats each JSON line pino writes into a readable one, then writes it synchronously to `fd`. */
export function prettyStream (fd: number, colorize: boolean): DestinationStream & { flushSync (): void } {
  const format = prettyFactory({
    colorize,
    translateTime: 'SYS:yyyy-mm-dd HH:MM:ss.l',
    ignore: PRETTY_IGNORED,
    messageFormat: '{if module}{module}: {end}{msg}',
    singleLine: true,
  })
  const sink = pino.destination({ dest: fd, sync: true })
  return {
    write (line: string) { sink.write(format(line)) },
    flushSync () { sink.flushSync() },
  }
}

export interface LoggerOptions {
  level?: LogLevel
  name?: string
  /** Where records go: 1 (stdout, the default) or 2 (stderr). */
  fd?: 1 | 2
  /** Default: CC_LOG_FORMAT, else by whether `fd` is a terminal. */
  format?: LogFormat
  /** Overrides fd and format (tests). */
  destination?: DestinationStream
}

/** Creates the root logger; modules get children of it (`moduleLogger(logger, 'wireguard')`). */
export function createLogger (options: LoggerOptions = {}): Logger {
  const fd = options.fd ?? 1
  const terminal = isatty(fd)
  const format = options.format ?? parseLogFormat(process.env.CC_LOG_FORMAT, terminal)
  const destination = options.destination ?? (format === 'pretty' ? prettyStream(fd, terminal) : pino.destination({ dest: fd, sync: true }))
  return pino({
    name: options.name ?? 'cloud-connect',
    level: options.level ?? 'info',
    base: { pid: process.pid },
  }, destination)
}
