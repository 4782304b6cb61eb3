/**
 * SEGMENT ARRIVES (RFC 9293 3.10.7.3 for SYN-SENT, 3.10.7.4 for the other states), with the
 * RFC 5961 defences (exact-match RST, challenge ACKs for in-window RST and for SYN, ACK range
 * check), PAWS and TS.Recent (RFC 7323), SACK scoreboard updates (RFC 2018) and loss detection
 * (RFC 6675 / RFC 6582 NewReno when the peer does not do SACK).
 */
import type { TcpParsed } from '../../../proto/wire/tcp.ts'
import type { TcpConnection } from './connection.ts'
import { TCP_SYN, TCP_ACK, TCP_RST, TCP_FIN } from '../../../proto/wire/tcp.ts'
import { TcpError } from './errors.ts'
import { seqAdd, seqDiff, seqLt, seqLe, seqGt, seqGe } from './seq.ts'
import { DUP_THRESH, MAX_BATCHED_ACK_BYTES, PAWS_IDLE_LIMIT } from './constants.ts'
import {
  CLOSED, SYN_SENT, SYN_RECEIVED, ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2, CLOSE_WAIT, CLOSING, LAST_ACK,
  TIME_WAIT, acceptsData,
} from './state.ts'
import { transmit, sendAck, sendSynAck, sendResetTo, retransmitFirst, sendChallengeAck } from './output.ts'

export function segmentArrives (conn: TcpConnection, seg: TcpParsed, datagram: Buffer, now: number): void {
  if (conn.state === CLOSED) return
  if (conn.state === SYN_SENT) {
    synSentArrives(conn, seg, datagram, now)
    return
  }
  otherStatesArrive(conn, seg, datagram, now)
}

/** RFC 9293 3.10.7.3. */
function synSentArrives (conn: TcpConnection, seg: TcpParsed, datagram: Buffer, now: number): void {
  const c = conn.host.counters
  const flags = seg.flags
  const hasAck = (flags & TCP_ACK) !== 0
  // First: the ACK must acknowledge our SYN (ISS < SEG.ACK =< SND.NXT).
  if (hasAck && (seqLe(seg.ack, conn.snd.iss) || seqGt(seg.ack, conn.snd.max))) {
    c.dropped.inc('bad_ack')
    if ((flags & TCP_RST) === 0) sendResetTo(conn, seg.ack, now)
    return
  }
  // Second: RFC 5961 3.2 in SYN-SENT, an RST counts only with an acceptable ACK.
  if ((flags & TCP_RST) !== 0) {
    if (!hasAck) {
      c.dropped.inc('rst_without_ack')
      return
    }
    c.events.inc('rst_received')
    conn.close(new TcpError('ECONNREFUSED', 'connect', conn.remoteAddress, conn.remotePort), 'refused', now)
    return
  }
  if ((flags & TCP_SYN) === 0) {
    c.dropped.inc('no_syn')
    return
  }
  conn.segmentAccepted(now)
  conn.rcv.synReceived(seg.seq)
  conn.negotiate(seg, now)
  // RFC 7323 2.2: the window of a SYN is never scaled.
  conn.snd.synWindow(seg.window, seg.seq, seg.ack)
  if (hasAck) {
    conn.snd.acknowledge(seg.ack)
    conn.rtt.synAcknowledged(now, conn.recovery.synRetransmits !== 0)
    conn.timers.stopRto()
    conn.established(now)
    if (conn.state === CLOSED) return
    conn.rcv.requestAck()
    if (seg.payloadLen > 0 || (flags & TCP_FIN) !== 0) receiveTextAndFin(conn, seg, datagram, now)
    transmit(conn, now)
    return
  }
  // Simultaneous open (RFC 9293 3.5 figure 8): SYN-RECEIVED, answer with SYN-ACK.
  c.events.inc('simultaneous_open')
  conn.setState(SYN_RECEIVED, now)
  sendSynAck(conn, now)
}

/** RFC 9293 3.10.7.4: SYN-RECEIVED and every synchronized state. */
function otherStatesArrive (conn: TcpConnection, seg: TcpParsed, datagram: Buffer, now: number): void {
  const c = conn.host.counters
  const flags = seg.flags
  const isRst = (flags & TCP_RST) !== 0
  const isSyn = (flags & TCP_SYN) !== 0

  // Our SYN-ACK was lost and the peer repeats its SYN: repeat the SYN-ACK.
  if (conn.state === SYN_RECEIVED && (flags & (TCP_SYN | TCP_ACK | TCP_RST)) === TCP_SYN && seg.seq === conn.rcv.irs) {
    c.retransmits.inc('syn_ack')
    sendSynAck(conn, now)
    return
  }

  // RFC 7323 5.3 PAWS: an older timestamp than TS.Recent marks an old duplicate. Pure ACKs are
  // exempt (as Linux's "disordered ACK" rule): reordering makes them arrive late, and the ACK
  // checks below already keep an old one from moving anything backwards.
  const pureAck = seg.payloadLen === 0 && (flags & (TCP_SYN | TCP_FIN | TCP_RST)) === 0
  if (conn.timestamps && seg.timestamp && !isRst && !pureAck && seqLt(seg.tsVal, conn.tsRecent) && now - conn.tsRecentAt < PAWS_IDLE_LIMIT) {
    c.dropped.inc('paws')
    sendAck(conn, now)
    return
  }

  // First: sequence number acceptability.
  const segLen = seg.payloadLen + (isSyn ? 1 : 0) + ((flags & TCP_FIN) !== 0 ? 1 : 0)
  if (!conn.rcv.acceptable(seg.seq, segLen)) {
    // All of it below RCV.NXT: the peer sent it again because our ACK came late or was lost (its
    // retransmission timer fired while we were not reading). ACKed below, like any unacceptable
    // segment; counted apart from segments beyond the window, which would be a fault of ours or the peer's.
    if (segLen > 0 && seqLe(seqAdd(seg.seq, segLen), conn.rcv.nxt)) c.events.inc('duplicate_segment')
    else c.dropped.inc('out_of_window')
    if (!isRst) {
      // RFC 9293 3.10.7.4 TIME-WAIT: a retransmitted FIN restarts the 2 MSL wait.
      if (conn.state === TIME_WAIT && (flags & TCP_FIN) !== 0) conn.timers.startStateTimer(now + conn.options.timeWait)
      sendAck(conn, now)
    }
    return
  }
  // Any acceptable segment answers outstanding keepalive probes.
  conn.segmentAccepted(now)

  // Second: RST (RFC 5961 3.2: only an exact match resets; in-window otherwise gets a challenge ACK).
  if (isRst) {
    if (seg.seq !== conn.rcv.nxt) {
      c.events.inc('rst_in_window')
      sendChallengeAck(conn, now)
      return
    }
    c.events.inc('rst_received')
    resetArrives(conn, now)
    return
  }

  // Fourth: SYN in a synchronized state (RFC 5961 4.2): challenge ACK, drop.
  if (isSyn) {
    c.events.inc('syn_in_window')
    sendChallengeAck(conn, now)
    return
  }

  // Fifth: the ACK field.
  if ((flags & TCP_ACK) === 0) {
    c.dropped.inc('no_ack')
    return
  }

  // RFC 7323 4.3: TS.Recent follows the segment that covers Last.ACK.sent.
  if (conn.timestamps && seg.timestamp && seqLe(seg.seq, conn.rcv.lastAckSent) && seqGe(seg.tsVal, conn.tsRecent)) {
    conn.updateTsRecent(seg.tsVal, now)
  }

  if (!ackArrives(conn, seg, now)) return
  if (conn.state === CLOSED) return

  // Seventh and eighth: text and FIN.
  if (seg.payloadLen > 0 || (flags & TCP_FIN) !== 0) receiveTextAndFin(conn, seg, datagram, now)
  if (conn.state === CLOSED) return
  transmit(conn, now)
}

function resetArrives (conn: TcpConnection, now: number): void {
  switch (conn.state) {
    case SYN_RECEIVED:
      if (conn.passive) {
        // RFC 9293 3.10.7.4: a passive open returns to LISTEN; we simply forget the half-open connection.
        conn.close(null, 'reset_in_syn_received', now)
      } else {
        conn.close(new TcpError('ECONNREFUSED', 'connect', conn.remoteAddress, conn.remotePort), 'refused', now)
      }
      return
    case ESTABLISHED:
    case FIN_WAIT_1:
    case FIN_WAIT_2:
    case CLOSE_WAIT:
      conn.close(new TcpError('ECONNRESET', 'read', conn.remoteAddress, conn.remotePort), 'reset', now)
      return
    default:
      // CLOSING, LAST-ACK, TIME-WAIT: the connection was finishing anyway.
      conn.close(null, 'reset', now)
  }
}

/**
 * The ACK field (fifth check). Returns false when the segment is to be dropped or the
 * connection ended.
 */
function ackArrives (conn: TcpConnection, seg: TcpParsed, now: number): boolean {
  const c = conn.host.counters
  const snd = conn.snd
  const recovery = conn.recovery
  const ack = seg.ack
  if (conn.state === SYN_RECEIVED) {
    if (seqLt(snd.una, ack) && seqLe(ack, snd.max)) {
      snd.takeWindow(seg.window, seg.seq, ack)
      conn.rtt.synAcknowledged(now, recovery.synRetransmits !== 0)
      conn.established(now)
      if (conn.state === CLOSED) return false
    } else {
      c.dropped.inc('bad_ack')
      sendResetTo(conn, ack, now)
      return false
    }
  }
  // RFC 5961 5.2: acceptable ACKs lie in [SND.UNA - MAX.SND.WND, SND.NXT].
  if (seqGt(ack, snd.max)) {
    c.dropped.inc('ack_unsent')
    sendAck(conn, now)
    return false
  }
  if (seqLt(ack, seqAdd(snd.una, -Math.max(snd.maxWnd, 1)))) {
    c.dropped.inc('ack_too_old')
    sendChallengeAck(conn, now)
    return false
  }

  const acked = seqDiff(ack, snd.una)
  let newlySacked = 0
  if (conn.sack && seg.sackBlocks !== null) {
    newlySacked = recovery.scoreboard.update(seg.sackBlocks, acked > 0 ? ack : snd.una, snd.max)
  }
  if (acked > 0) {
    newDataAcked(conn, seg, ack, now)
    if (conn.state === CLOSED) return false
  } else if (acked === 0 && snd.max !== snd.una) {
    const window = seg.window * (1 << snd.shift)
    // RFC 5681 2 DUPLICATE ACKNOWLEDGMENT; RFC 6675 2 with SACK: an ACK that SACKs new data.
    const duplicate = conn.sack
      ? newlySacked > 0
      : seg.payloadLen === 0 && (seg.flags & (TCP_SYN | TCP_FIN)) === 0 && window === snd.wnd
    if (duplicate) duplicateAck(conn, now)
  }
  if (conn.sack && !recovery.scoreboard.empty) sackLossChecks(conn, now)

  // Window update (RFC 9293 3.10.7.4 fifth check, ESTABLISHED): only from newer segments.
  if (snd.updateWindow(seg.window, seg.seq, ack) && snd.wnd > 0) conn.timers.resetPersistBackoff()

  const finAcked = snd.finAcked
  switch (conn.state) {
    case FIN_WAIT_1:
      if (finAcked) {
        conn.setState(FIN_WAIT_2, now)
        conn.timers.stopRto()
        if (conn.orphaned) conn.timers.limitStateTimer(now + conn.options.finWait2Timeout)
      }
      break
    case CLOSING:
      if (finAcked) {
        conn.enterTimeWait(now)
        return false
      }
      break
    case LAST_ACK:
      if (finAcked) {
        conn.close(null, 'normal', now)
        return false
      }
      break
  }
  return true
}

function newDataAcked (conn: TcpConnection, seg: TcpParsed, ack: number, now: number): void {
  const c = conn.host.counters
  const snd = conn.snd
  const recovery = conn.recovery
  const flightBefore = seqDiff(snd.max, snd.una)
  const acked = seqDiff(ack, snd.una)
  const dataAcked = snd.acknowledge(ack)
  if (dataAcked > 0) conn.host.adjustMemory(-dataAcked)
  recovery.acknowledged(ack)
  conn.progressed(now)
  // RFC 8985 7: an ACK of new data re-arms the probe timer (transmit does); the probe is answered once acknowledged.
  conn.timers.stopTlp()

  // RTT: every ACK of new data with an echoed timestamp (RFC 7323 4), else one timed segment (RFC 6298 3).
  if (conn.timestamps && seg.timestamp && seg.tsEcr !== 0) {
    const sample = (conn.tsNow(now) - seg.tsEcr) >>> 0
    if (sample < 0x7fffffff) conn.rtt.sample(sample, Math.max(1, Math.ceil(flightBefore / (2 * conn.smss))))
  } else {
    conn.rtt.acknowledged(ack, now)
  }

  if (recovery.active) {
    if (seqGe(ack, recovery.recoveryPoint)) {
      // RFC 6675 5 / RFC 6582 3.2 step 3: full acknowledgment ends recovery.
      recovery.end()
      conn.cc.onRecoveryEnd(now)
      c.events.inc('recovery_end')
    } else if (!conn.sack) {
      // RFC 6582 3.2 step 5: a partial ACK retransmits the next unacknowledged segment at once.
      recovery.resetDupAcks()
      retransmitFirst(conn, now, 'fast')
    }
  } else {
    recovery.resetDupAcks()
    conn.cc.onAck(acked, now, conn.rtt.srtt, recovery.cwndLimited)
  }

  // RFC 6298 5.2 / 5.3: stop the timer when all is acknowledged, else restart it.
  conn.timers.newDataAcked(snd.una === snd.max, now, now + conn.rtt.rto)
  conn.queueWritable()
}

function duplicateAck (conn: TcpConnection, now: number): void {
  const recovery = conn.recovery
  const dupAcks = recovery.duplicateAck()
  conn.host.counters.events.inc('duplicate_ack')
  if (recovery.active) return
  const una = conn.snd.una
  const lossSignal = dupAcks >= DUP_THRESH || (conn.sack && recovery.scoreboard.isLost(una, conn.smss))
  // RFC 6582 3.2 step 2 / RFC 6675 5 step 4: only data sent after the last recovery counts.
  if (!lossSignal || seqLt(una, recovery.recoveryPoint)) return
  enterRecovery(conn, now)
}

/**
 * Two losses RFC 6675 alone only finds by the retransmission timeout:
 * - the tail loss probe (sent last) was SACKed while data below it is still missing: that data is
 *   lost (RFC 8985 RACK's rule, applied to the probe only). Outside recovery this starts one; in
 *   or out, every hole below the probe counts as lost (lostBelow), so a lost run at the tail of
 *   the window leaves the pipe instead of holding it full until the RTO;
 * - in recovery, more than (DupThresh - 1) * SMSS is SACKed above what had been sent when the hole
 *   at SND.UNA was retransmitted: that retransmission is lost too, so it goes again (as Linux's
 *   lost-retransmit detection).
 */
function sackLossChecks (conn: TcpConnection, now: number): void {
  const recovery = conn.recovery
  const board = recovery.scoreboard
  const una = conn.snd.una
  const tlpEnd = recovery.tlpEnd
  const probeSacked = tlpEnd !== -1 && seqLt(una, tlpEnd) && seqGe(board.highest, tlpEnd)
  if (!recovery.active) {
    if (probeSacked && seqGe(una, recovery.recoveryPoint)) {
      conn.host.counters.events.inc('probe_found_loss')
      enterRecovery(conn, now)
      recovery.markLostBelow(tlpEnd)
    }
    return
  }
  if (probeSacked && recovery.lostBelow !== tlpEnd) {
    // A probe in recovery (the ACKs had stopped: what is missing below it holds the pipe full).
    conn.host.counters.events.inc('probe_found_loss')
    recovery.markLostBelow(tlpEnd)
  }
  if (recovery.rxtMark !== -1 && seqGt(board.starts[0], una) &&
    board.sackedBetween(recovery.rxtMark, conn.snd.max) > (DUP_THRESH - 1) * conn.smss) {
    conn.host.counters.events.inc('lost_retransmit')
    recovery.lostRetransmit(una)
  }
}

function enterRecovery (conn: TcpConnection, now: number): void {
  const snd = conn.snd
  conn.timers.stopTlp()
  conn.recovery.enter(snd.una, snd.max)
  conn.cc.onLoss(now, seqDiff(snd.max, snd.una))
  conn.host.counters.events.inc('recovery_start')
  // RFC 6675 5 step 4.3 / RFC 5681 3.2 step 2: retransmit the first unacknowledged segment now.
  retransmitFirst(conn, now, 'fast')
}

/** Seventh (segment text) and eighth (FIN) checks. */
function receiveTextAndFin (conn: TcpConnection, seg: TcpParsed, datagram: Buffer, now: number): void {
  const c = conn.host.counters
  const isSyn = (seg.flags & TCP_SYN) !== 0
  let seq = isSyn ? seqAdd(seg.seq, 1) : seg.seq
  let off = seg.payloadOffset
  let len = seg.payloadLen

  if (len > 0) {
    if (!acceptsData(conn.state)) {
      // CLOSE-WAIT, CLOSING, LAST-ACK, TIME-WAIT: the peer already sent FIN (RFC 9293: ignore the text).
      c.dropped.inc('data_after_fin')
      len = 0
    } else if (conn.orphaned) {
      // Data for an application that has closed: reset as a socket closed with data pending would.
      c.dropped.inc('data_after_close')
      conn.fail('ECONNRESET', 'data_after_close', now, true)
      return
    }
  }

  const rcv = conn.rcv
  if (len > 0) {
    // Trim what was already received.
    const behind = seqDiff(rcv.nxt, seq)
    if (behind > 0) {
      rcv.requestAck()
      if (behind >= len) {
        len = 0
      } else {
        off += behind
        len -= behind
        seq = rcv.nxt
      }
    }
    // Trim what lies beyond the advertised window.
    const room = seqDiff(rcv.advRight, seq)
    if (len > room) {
      c.dropped.inc(room <= 0 ? 'zero_window' : 'beyond_window')
      rcv.requestAck()
      len = Math.max(0, room)
    }
  }

  if (len > 0) {
    rcv.noteSegment(len)
    const reassembly = rcv.reassembly
    if (seq === rcv.nxt) {
      conn.deliver(datagram.subarray(off, off + len))
      rcv.advance(len, len)
      if (!reassembly.empty) {
        const before = reassembly.bytes
        const chunks = reassembly.takeInOrder(rcv.nxt)
        if (chunks !== null) {
          for (const chunk of chunks) {
            conn.deliver(chunk)
            rcv.advance(chunk.length, 0)
          }
          // RFC 5681 4.2: ACK at once when a segment fills (part of) a gap (its bytes are counted above).
          ackOwed(conn, conn.sack)
        }
        conn.host.adjustMemory(reassembly.bytes - before)
      }
      // RFC 5681 4.2 / RFC 9293 3.8.6.3: ACK at least every second full-sized segment; else delay.
      // With batched input the ACK goes at the end of the batch, once for all its segments (as a
      // kernel with GRO does): the batch is what the host read in one go, well under a millisecond.
      if (rcv.ackPendingBytes >= 2 * rcv.mss) ackOwed(conn, true)
      else conn.timers.armDelack(now + conn.options.delayedAck)
    } else {
      const added = reassembly.insert(seq, datagram.subarray(off, off + len))
      if (added < 0) c.dropped.inc('out_of_order_limit')
      else if (added > 0) conn.host.adjustMemory(added)
      // RFC 5681 4.2: an out-of-order segment is acknowledged at once (a duplicate ACK with SACK).
      rcv.owe(len)
      ackOwed(conn, conn.sack)
    }
  }

  if ((seg.flags & TCP_FIN) !== 0) {
    if (!acceptsData(conn.state) || rcv.finReceived) {
      // A retransmitted FIN in CLOSE-WAIT, CLOSING, LAST-ACK or TIME-WAIT: acknowledge it again.
      rcv.requestAck()
    } else {
      const finSeq = seqAdd(seg.seq, (isSyn ? 1 : 0) + seg.payloadLen)
      if (finSeq === rcv.nxt) finArrives(conn, now)
      else if (seqGt(finSeq, rcv.nxt) && seqLe(finSeq, rcv.advRight)) rcv.holdFin(finSeq)
    }
  }
  if (rcv.pendingFinSeq !== -1 && rcv.pendingFinSeq === rcv.nxt && !rcv.finReceived) finArrives(conn, now)
}

/**
 * An ACK is owed. With batched input it goes once, at the end of the batch (as a kernel's GRO
 * does), unless 64 KiB are owed already or `mayWait` is false; else at once.
 * For a segment out of order or filling a gap, RFC 5681 4.2's "at once" is the end of the batch
 * when SACK is in use: one ACK whose first SACK block holds the latest segment (RFC 2018 4)
 * answers all of the batch's segments, as SACK compression does. While holes are open nearly
 * every segment is out of order; an ACK for each one multiplied the ACKs of a lossy transfer ten
 * times, each one encrypted and sent here and decrypted and processed by the sender. Without
 * SACK the sender counts duplicate ACKs, so each goes at once.
 */
function ackOwed (conn: TcpConnection, mayWait: boolean): void {
  if (mayWait && conn.host.batching && conn.rcv.ackPendingBytes < MAX_BATCHED_ACK_BYTES) {
    if (conn.rcv.deferAck()) conn.host.defer(conn)
  } else {
    conn.rcv.requestAck()
  }
}

/** RFC 9293 3.10.7.4 eighth check. */
function finArrives (conn: TcpConnection, now: number): void {
  conn.rcv.finArrives()
  conn.events.queueEnd()
  switch (conn.state) {
    case SYN_RECEIVED:
    case ESTABLISHED:
      conn.setState(CLOSE_WAIT, now)
      break
    case FIN_WAIT_1: {
      if (conn.snd.finAcked) {
        sendAck(conn, now)
        conn.enterTimeWait(now)
      } else {
        // Simultaneous close (RFC 9293 3.6 figure 13).
        conn.setState(CLOSING, now)
      }
      break
    }
    case FIN_WAIT_2:
      sendAck(conn, now)
      conn.enterTimeWait(now)
      break
  }
}
