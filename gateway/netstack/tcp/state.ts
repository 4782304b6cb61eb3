/** RFC 9293 3.3.2 connection states, as small integers with their RFC names for logs and metrics. */
export type TcpState = number

export const CLOSED: TcpState = 0
export const LISTEN: TcpState = 1
export const SYN_SENT: TcpState = 2
export const SYN_RECEIVED: TcpState = 3
export const ESTABLISHED: TcpState = 4
export const FIN_WAIT_1: TcpState = 5
export const FIN_WAIT_2: TcpState = 6
export const CLOSE_WAIT: TcpState = 7
export const CLOSING: TcpState = 8
export const LAST_ACK: TcpState = 9
export const TIME_WAIT: TcpState = 10

export const STATE_NAMES = [
  'CLOSED', 'LISTEN', 'SYN-SENT', 'SYN-RECEIVED', 'ESTABLISHED', 'FIN-WAIT-1', 'FIN-WAIT-2',
  'CLOSE-WAIT', 'CLOSING', 'LAST-ACK', 'TIME-WAIT',
] as const

export type TcpStateName = typeof STATE_NAMES[number]

/** States in which the connection is synchronized (RFC 9293 3.5.2 / RFC 5961). */
export function isSynchronized (state: TcpState): boolean {
  return state >= ESTABLISHED
}

/** States in which received data is still delivered to the application. */
export function acceptsData (state: TcpState): boolean {
  return state === ESTABLISHED || state === FIN_WAIT_1 || state === FIN_WAIT_2
}
