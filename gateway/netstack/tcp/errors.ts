/**
 * Errors surfaced to sockets, shaped like node's system errors (`code`, `errno`, `syscall`,
 * `address`, `port`) so code written for net.Socket (http.Agent, proxies) handles them unchanged.
 */
import { constants } from 'node:os'
import { formatIPv4 } from '../../../proto/wire/ipv4.ts'

export type TcpErrorCode =
  | 'ECONNREFUSED' | 'ECONNRESET' | 'ETIMEDOUT' | 'ECONNABORTED' | 'EPIPE'
  | 'EADDRNOTAVAIL' | 'EMFILE' | 'EINVAL' | 'ENETDOWN'

const MESSAGES: Record<TcpErrorCode, string> = {
  ECONNREFUSED: 'connection refused',
  ECONNRESET: 'connection reset by peer',
  ETIMEDOUT: 'connection timed out',
  ECONNABORTED: 'connection aborted',
  EPIPE: 'broken pipe',
  EADDRNOTAVAIL: 'no local port available',
  EMFILE: 'too many connections',
  EINVAL: 'invalid argument',
  ENETDOWN: 'network stack closed',
}

export class TcpError extends Error {
  readonly code: TcpErrorCode
  readonly errno: number
  readonly syscall: string
  readonly address?: string
  readonly port?: number

  constructor (code: TcpErrorCode, syscall: string, address?: number, port?: number, detail?: string) {
    const where = address === undefined ? '' : ` ${formatIPv4(address)}${port === undefined ? '' : `:${port}`}`
    super(`${syscall} ${code}${where}${detail === undefined ? '' : ` (${detail})`}: ${MESSAGES[code]}`)
    this.name = 'Error'
    this.code = code
    this.errno = -((constants.errno as Record<string, number>)[code] ?? 0)
    this.syscall = syscall
    if (address !== undefined) this.address = formatIPv4(address)
    if (port !== undefined) this.port = port
  }
}
