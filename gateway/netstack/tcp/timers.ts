/**
 * Timer expiry for one connection: retransmission (RFC 6298 5.4-5.7, SYN retries), zero-window
 * probes (RFC 9293 3.8.6.1), keepalive (RFC 9293 3.8.4), the user timeout (RFC 5482), the end of
 * TIME-WAIT and the timeouts that free connections stuck in FIN-WAIT-2, CLOSE-WAIT, LAST-ACK and
 * CLOSING. The deadlines themselves are fields of the connection.
 */
import type { TcpConnection } from './connection.ts'
import { transmit, sendSyn, sendSynAck, sendProbe, tailLossProbe } from './output.ts'
import { seqAdd, seqDiff, seqGt } from './seq.ts'
import { MAX_PERSIST_INTERVAL } from './constants.ts'
import { SYN_SENT, SYN_RECEIVED, ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2, CLOSE_WAIT, CLOSING, LAST_ACK, TIME_WAIT, CLOSED } from './state.ts'

export function timersDue (conn: TcpConnection, now: number): void {
  if (conn.state !== CLOSED && conn.stateAt <= now) stateTimeout(conn, now)
  if (conn.state !== CLOSED && conn.userTimeout > 0 && conn.unackedSince + conn.userTimeout <= now) {
    // RFC 5482 / RFC 9293 3.8.3: data unacknowledged for longer than the user timeout.
    conn.host.counters.events.inc('user_timeout')
    conn.fail('ETIMEDOUT', 'user_timeout', now, true)
  }
  if (conn.state !== CLOSED && conn.rtoAt <= now) retransmitTimeout(conn, now)
  if (conn.state !== CLOSED && conn.tlpAt <= now) tailLossProbe(conn, now)
  if (conn.state !== CLOSED && conn.paceAt <= now) {
    conn.paceAt = Infinity
    transmit(conn, now)
  }
  if (conn.state !== CLOSED && conn.persistAt <= now) persistTimeout(conn, now)
  if (conn.state !== CLOSED && conn.keepaliveAt <= now) keepaliveTimeout(conn, now)
  if (conn.state !== CLOSED && conn.delackAt <= now) {
    conn.delackAt = Infinity
    conn.ackNow = true
    transmit(conn, now)
  }
}

/** RFC 6298 5.4-5.7 (and SYN retransmission, RFC 9293 3.8.1). */
function retransmitTimeout (conn: TcpConnection, now: number): void {
  conn.rtoAt = Infinity
  const o = conn.options
  const c = conn.host.counters
  if (conn.state === SYN_SENT || conn.state === SYN_RECEIVED) {
    conn.synRetransmits++
    const limit = conn.state === SYN_SENT ? o.synRetries : o.synAckRetries
    if (conn.synRetransmits > limit) {
      if (conn.passive) {
        c.events.inc('syn_received_timeout')
        conn.close(null, 'syn_received_timeout', now)
      } else {
        conn.fail('ETIMEDOUT', 'connect_timeout', now, false)
      }
      return
    }
    conn.rtt.backoff()
    conn.rttTiming = false
    c.retransmits.inc(conn.state === SYN_SENT ? 'syn' : 'syn_ack')
    if (conn.state === SYN_SENT) sendSyn(conn, now)
    else sendSynAck(conn, now)
    conn.rtoAt = now + conn.rtt.rto
    return
  }
  const flight = seqDiff(conn.sndMax, conn.sndUna)
  if (flight <= 0) return
  if (++conn.retransmits > o.maxRetransmits) {
    c.events.inc('retransmit_limit')
    conn.fail('ETIMEDOUT', 'retransmit_limit', now, true)
    return
  }
  c.events.inc('rto')
  conn.cc.onRetransmitTimeout(now, flight)
  conn.rtt.backoff()
  // Karn: nothing sent before the timeout may be timed (RFC 6298 3).
  conn.rttTiming = false
  // RFC 6582 4 / RFC 6675 5.1: no fast retransmit for data sent before the timeout; RFC 2018 8:
  // the receiver may have discarded SACKed data, so start over from SND.UNA.
  conn.inRecovery = false
  conn.dupAcks = 0
  conn.tlpAt = Infinity
  conn.tlpEnd = -1
  conn.rxtMark = -1
  conn.rxtLog.length = 0
  conn.lostBelow = -1
  conn.recoveryPoint = conn.sndMax
  conn.highRxt = conn.sndUna
  conn.scoreboard.clear()
  conn.sndNxt = conn.sndUna
  transmit(conn, now)
  if (conn.rtoAt === Infinity && seqGt(conn.sndMax, conn.sndUna)) conn.rtoAt = now + conn.rtt.rto
}

/** Zero-window probe (RFC 9293 3.8.6.1), backing off like the RTO. */
function persistTimeout (conn: TcpConnection, now: number): void {
  conn.persistAt = Infinity
  const windowClosed = seqDiff(seqAdd(conn.sndUna, conn.sndWnd), conn.sndNxt) <= 0
  if (conn.sndUna !== conn.sndMax || !conn.hasUnsentData() || !windowClosed) {
    transmit(conn, now)
    return
  }
  conn.host.counters.retransmits.inc('probe')
  sendProbe(conn, now)
  conn.persistBackoff++
  conn.persistAt = now + Math.min(conn.rtt.rto * 2 ** Math.min(conn.persistBackoff, 16), MAX_PERSIST_INTERVAL)
}

/** RFC 9293 3.8.4 keepalive: probe an idle connection, abort after unanswered probes. */
function keepaliveTimeout (conn: TcpConnection, now: number): void {
  conn.keepaliveAt = Infinity
  if (!conn.keepAlive || conn.state < ESTABLISHED || conn.state === TIME_WAIT) return
  const o = conn.options
  if (conn.keepaliveProbes === 0 && now - conn.lastReceivedAt < conn.keepAliveIdle) {
    conn.keepaliveAt = conn.lastReceivedAt + conn.keepAliveIdle
    return
  }
  if (conn.sndUna !== conn.sndMax) {
    // Data in flight: the retransmission timer already tests the path.
    conn.keepaliveAt = now + conn.keepAliveIdle
    return
  }
  if (conn.keepaliveProbes >= o.keepAliveProbes) {
    conn.host.counters.events.inc('keepalive_abort')
    conn.fail('ETIMEDOUT', 'keepalive_timeout', now, true)
    return
  }
  conn.host.counters.events.inc('keepalive_probe')
  sendProbe(conn, now)
  conn.keepaliveProbes++
  conn.keepaliveAt = now + o.keepAliveInterval
}

/** Timers that free connections stuck in closing states, and the end of TIME-WAIT. */
function stateTimeout (conn: TcpConnection, now: number): void {
  conn.stateAt = Infinity
  const o = conn.options
  switch (conn.state) {
    case TIME_WAIT:
      conn.close(null, 'time_wait_expired', now)
      return
    case FIN_WAIT_2:
      if (now - conn.lastReceivedAt < o.finWait2Timeout) {
        conn.stateAt = conn.lastReceivedAt + o.finWait2Timeout
        return
      }
      conn.host.counters.events.inc('fin_wait_2_timeout')
      conn.fail('ETIMEDOUT', 'fin_wait_2_timeout', now, true)
      return
    case CLOSE_WAIT: {
      const idleSince = Math.max(conn.lastReceivedAt, conn.lastProgressAt)
      if (now - idleSince < o.closeWaitTimeout) {
        conn.stateAt = idleSince + o.closeWaitTimeout
        return
      }
      conn.host.counters.events.inc('close_wait_timeout')
      conn.fail('ETIMEDOUT', 'close_wait_timeout', now, true)
      return
    }
    case LAST_ACK:
    case CLOSING:
    case FIN_WAIT_1:
      conn.host.counters.events.inc(`${conn.state === FIN_WAIT_1 ? 'fin_wait_1' : conn.state === CLOSING ? 'closing' : 'last_ack'}_timeout`)
      conn.fail('ETIMEDOUT', conn.state === LAST_ACK ? 'last_ack_timeout' : 'closing_timeout', now, true)
  }
}
