/**
 * Timer expiry for one connection: retransmission (RFC 6298 5.4-5.7, SYN retries), zero-window
 * probes (RFC 9293 3.8.6.1), keepalive (RFC 9293 3.8.4), the user timeout (RFC 5482), the end of
 * TIME-WAIT and the timeouts that free connections stuck in FIN-WAIT-2, CLOSE-WAIT, LAST-ACK and
 * CLOSING. The deadlines themselves are kept in deadlines.ts.
 */
import type { TcpConnection } from './connection.ts'
import { transmit, sendSyn, sendSynAck, sendProbe, tailLossProbe } from './output.ts'
import { seqDiff, seqGt } from './seq.ts'
import { MAX_PERSIST_INTERVAL } from './constants.ts'
import { SYN_SENT, SYN_RECEIVED, ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2, CLOSE_WAIT, CLOSING, LAST_ACK, TIME_WAIT, CLOSED } from './state.ts'

export function timersDue (conn: TcpConnection, now: number): void {
  const timers = conn.timers
  if (conn.state !== CLOSED && timers.stateAt <= now) stateTimeout(conn, now)
  if (conn.state !== CLOSED && conn.userTimeout > 0 && timers.unackedSince + conn.userTimeout <= now) {
    // RFC 5482 / RFC 9293 3.8.3: data unacknowledged for longer than the user timeout.
    conn.host.counters.events.inc('user_timeout')
    conn.fail('ETIMEDOUT', 'user_timeout', now, true)
  }
  if (conn.state !== CLOSED && timers.rtoAt <= now) retransmitTimeout(conn, now)
  if (conn.state !== CLOSED && timers.tlpAt <= now) tailLossProbe(conn, now)
  if (conn.state !== CLOSED && timers.paceAt <= now) {
    timers.stopPace()
    transmit(conn, now)
  }
  if (conn.state !== CLOSED && timers.persistAt <= now) persistTimeout(conn, now)
  if (conn.state !== CLOSED && timers.keepaliveAt <= now) keepaliveTimeout(conn, now)
  if (conn.state !== CLOSED && timers.delackAt <= now) {
    timers.stopDelack()
    // Counted as Linux's DelayedACKs: an ACK the timer had to send (none went with data meanwhile).
    if (conn.rcv.ackPendingBytes > 0) conn.host.counters.events.inc('delayed_ack')
    conn.rcv.requestAck()
    transmit(conn, now)
  }
}

/** RFC 6298 5.4-5.7 (and SYN retransmission, RFC 9293 3.8.1). */
function retransmitTimeout (conn: TcpConnection, now: number): void {
  const timers = conn.timers
  const recovery = conn.recovery
  timers.stopRto()
  const o = conn.options
  const c = conn.host.counters
  if (conn.state === SYN_SENT || conn.state === SYN_RECEIVED) {
    const limit = conn.state === SYN_SENT ? o.synRetries : o.synAckRetries
    if (recovery.countSynTimeout() > limit) {
      if (conn.passive) {
        c.events.inc('syn_received_timeout')
        conn.close(null, 'syn_received_timeout', now)
      } else {
        conn.fail('ETIMEDOUT', 'connect_timeout', now, false)
      }
      return
    }
    conn.rtt.backoff()
    conn.rtt.stopTiming()
    c.retransmits.inc(conn.state === SYN_SENT ? 'syn' : 'syn_ack')
    if (conn.state === SYN_SENT) sendSyn(conn, now)
    else sendSynAck(conn, now)
    timers.startRto(now + conn.rtt.rto)
    return
  }
  const snd = conn.snd
  const flight = seqDiff(snd.max, snd.una)
  if (flight <= 0) return
  if (recovery.countTimeout() > o.maxRetransmits) {
    c.events.inc('retransmit_limit')
    conn.fail('ETIMEDOUT', 'retransmit_limit', now, true)
    return
  }
  c.events.inc('rto')
  conn.cc.onRetransmitTimeout(now, flight)
  conn.rtt.backoff()
  // Karn: nothing sent before the timeout may be timed (RFC 6298 3).
  conn.rtt.stopTiming()
  timers.stopTlp()
  recovery.restartAfterTimeout(snd.una, snd.max)
  snd.rewind()
  transmit(conn, now)
  if (timers.rtoAt === Infinity && seqGt(snd.max, snd.una)) timers.startRto(now + conn.rtt.rto)
}

/** Zero-window probe (RFC 9293 3.8.6.1), backing off like the RTO. */
function persistTimeout (conn: TcpConnection, now: number): void {
  const snd = conn.snd
  conn.timers.stopPersist()
  if (snd.una !== snd.max || !snd.hasUnsent() || snd.windowRoom() > 0) {
    transmit(conn, now)
    return
  }
  conn.host.counters.retransmits.inc('probe')
  sendProbe(conn, now)
  conn.timers.persistBackedOff(now, conn.rtt.rto, MAX_PERSIST_INTERVAL)
}

/** RFC 9293 3.8.4 keepalive: probe an idle connection, abort after unanswered probes. */
function keepaliveTimeout (conn: TcpConnection, now: number): void {
  const timers = conn.timers
  timers.stopKeepalive()
  if (!conn.keepAlive || conn.state < ESTABLISHED || conn.state === TIME_WAIT) return
  const o = conn.options
  if (timers.keepaliveProbes === 0 && now - conn.lastReceivedAt < conn.keepAliveIdle) {
    timers.startKeepalive(conn.lastReceivedAt + conn.keepAliveIdle)
    return
  }
  if (conn.snd.una !== conn.snd.max) {
    // Data in flight: the retransmission timer already tests the path.
    timers.startKeepalive(now + conn.keepAliveIdle)
    return
  }
  if (timers.keepaliveProbes >= o.keepAliveProbes) {
    conn.host.counters.events.inc('keepalive_abort')
    conn.fail('ETIMEDOUT', 'keepalive_timeout', now, true)
    return
  }
  conn.host.counters.events.inc('keepalive_probe')
  sendProbe(conn, now)
  timers.keepaliveProbeSent(now + o.keepAliveInterval)
}

/** Timers that free connections stuck in closing states, and the end of TIME-WAIT. */
function stateTimeout (conn: TcpConnection, now: number): void {
  const timers = conn.timers
  timers.stopStateTimer()
  const o = conn.options
  switch (conn.state) {
    case TIME_WAIT:
      conn.close(null, 'time_wait_expired', now)
      return
    case FIN_WAIT_2:
      if (now - conn.lastReceivedAt < o.finWait2Timeout) {
        timers.startStateTimer(conn.lastReceivedAt + o.finWait2Timeout)
        return
      }
      conn.host.counters.events.inc('fin_wait_2_timeout')
      conn.fail('ETIMEDOUT', 'fin_wait_2_timeout', now, true)
      return
    case CLOSE_WAIT: {
      const idleSince = Math.max(conn.lastReceivedAt, conn.lastProgressAt)
      if (now - idleSince < o.closeWaitTimeout) {
        timers.startStateTimer(idleSince + o.closeWaitTimeout)
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
