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
import { seqAdd, seqDiff, seqLt, seqLe, seqGt, seqGe, seqMin } from './seq.ts'
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
  if (hasAck && (seqLe(seg.ack, conn.iss) || seqGt(seg.ack, conn.sndMax))) {
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
  conn.lastReceivedAt = now
  conn.irs = seg.seq
  conn.rcvNxt = seqAdd(seg.seq, 1)
  conn.rcvAdvRight = conn.rcvNxt
  conn.negotiate(seg, now)
  // RFC 7323 2.2: the window of a SYN is never scaled.
  conn.sndWnd = seg.window
  conn.maxSndWnd = seg.window
  conn.sndWl1 = seg.seq
  conn.sndWl2 = seg.ack
  if (hasAck) {
    conn.sndUna = seg.ack
    if (seqLt(conn.sndNxt, conn.sndUna)) conn.sndNxt = conn.sndUna
    // The SYN's RTT is a valid sample unless the SYN was retransmitted (Karn).
    if (conn.synRetransmits === 0 && conn.rttTiming) conn.rtt.sample(now - conn.rttStart)
    conn.rttTiming = false
    conn.rtoAt = Infinity
    conn.established(now)
    if (conn.state === CLOSED) return
    conn.ackNow = true
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
  if (conn.state === SYN_RECEIVED && (flags & (TCP_SYN | TCP_ACK | TCP_RST)) === TCP_SYN && seg.seq === conn.irs) {
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
  if (!acceptable(conn, seg.seq, segLen)) {
    c.dropped.inc('out_of_window')
    if (!isRst) {
      // RFC 9293 3.10.7.4 TIME-WAIT: a retransmitted FIN restarts the 2 MSL wait.
      if (conn.state === TIME_WAIT && (flags & TCP_FIN) !== 0) conn.stateAt = now + conn.options.timeWait
      sendAck(conn, now)
    }
    return
  }
  conn.lastReceivedAt = now
  // Any acceptable segment answers outstanding keepalive probes.
  conn.keepaliveProbes = 0

  // Second: RST (RFC 5961 3.2: only an exact match resets; in-window otherwise gets a challenge ACK).
  if (isRst) {
    if (seg.seq !== conn.rcvNxt) {
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
  if (conn.timestamps && seg.timestamp && seqLe(seg.seq, conn.lastAckSent) && seqGe(seg.tsVal, conn.tsRecent)) {
    conn.tsRecent = seg.tsVal
    conn.tsRecentAt = now
  }

  if (!ackArrives(conn, seg, now)) return
  if (conn.state === CLOSED) return

  // Seventh and eighth: text and FIN.
  if (seg.payloadLen > 0 || (flags & TCP_FIN) !== 0) receiveTextAndFin(conn, seg, datagram, now)
  if (conn.state === CLOSED) return
  transmit(conn, now)
}

/** RFC 9293 3.10.7.4 first check: the four acceptability cases. */
function acceptable (conn: TcpConnection, seq: number, segLen: number): boolean {
  const right = conn.rcvAdvRight
  const wnd = seqDiff(right, conn.rcvNxt)
  if (wnd <= 0) {
    // A zero window still lets the ACK, RST and URG of a segment at RCV.NXT through; its text is trimmed.
    return seq === conn.rcvNxt
  }
  if (segLen === 0) return seqLe(conn.rcvNxt, seq) && seqLt(seq, right)
  const last = seqAdd(seq, segLen - 1)
  return (seqLe(conn.rcvNxt, seq) && seqLt(seq, right)) || (seqLe(conn.rcvNxt, last) && seqLt(last, right))
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
  const ack = seg.ack
  if (conn.state === SYN_RECEIVED) {
    if (seqLt(conn.sndUna, ack) && seqLe(ack, conn.sndMax)) {
      conn.sndWnd = seg.window * (1 << conn.sndShift)
      conn.maxSndWnd = Math.max(conn.maxSndWnd, conn.sndWnd)
      conn.sndWl1 = seg.seq
      conn.sndWl2 = ack
      if (conn.synRetransmits === 0 && conn.rttTiming) conn.rtt.sample(now - conn.rttStart)
      conn.rttTiming = false
      conn.established(now)
      if (conn.state === CLOSED) return false
    } else {
      c.dropped.inc('bad_ack')
      sendResetTo(conn, ack, now)
      return false
    }
  }
  // RFC 5961 5.2: acceptable ACKs lie in [SND.UNA - MAX.SND.WND, SND.NXT].
  if (seqGt(ack, conn.sndMax)) {
    c.dropped.inc('ack_unsent')
    sendAck(conn, now)
    return false
  }
  if (seqLt(ack, seqAdd(conn.sndUna, -Math.max(conn.maxSndWnd, 1)))) {
    c.dropped.inc('ack_too_old')
    sendChallengeAck(conn, now)
    return false
  }

  const acked = seqDiff(ack, conn.sndUna)
  let newlySacked = 0
  if (conn.sack && seg.sackBlocks !== null) {
    newlySacked = conn.scoreboard.update(seg.sackBlocks, acked > 0 ? ack : conn.sndUna, conn.sndMax)
  }
  if (acked > 0) {
    newDataAcked(conn, seg, ack, now)
    if (conn.state === CLOSED) return false
  } else if (acked === 0 && conn.sndMax !== conn.sndUna) {
    const window = seg.window * (1 << conn.sndShift)
    // RFC 5681 2 DUPLICATE ACKNOWLEDGMENT; RFC 6675 2 with SACK: an ACK that SACKs new data.
    const duplicate = conn.sack
      ? newlySacked > 0
      : seg.payloadLen === 0 && (seg.flags & (TCP_SYN | TCP_FIN)) === 0 && window === conn.sndWnd
    if (duplicate) duplicateAck(conn, now)
  }
  if (conn.sack && !conn.scoreboard.empty) sackLossChecks(conn, now)

  // Window update (RFC 9293 3.10.7.4 fifth check, ESTABLISHED): only from newer segments.
  if (seqLt(conn.sndWl1, seg.seq) || (conn.sndWl1 === seg.seq && seqLe(conn.sndWl2, ack))) {
    conn.sndWnd = seg.window * (1 << conn.sndShift)
    conn.sndWl1 = seg.seq
    conn.sndWl2 = ack
    if (conn.sndWnd > conn.maxSndWnd) conn.maxSndWnd = conn.sndWnd
    if (conn.sndWnd > 0) conn.persistBackoff = 0
  }

  const finAcked = conn.finQueued && seqGt(conn.sndUna, seqAdd(conn.sndBufSeq, conn.sendBuffer.length))
  switch (conn.state) {
    case FIN_WAIT_1:
      if (finAcked) {
        conn.setState(FIN_WAIT_2, now)
        conn.rtoAt = Infinity
        if (conn.orphaned) conn.stateAt = Math.min(conn.stateAt, now + conn.options.finWait2Timeout)
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
  const flightBefore = seqDiff(conn.sndMax, conn.sndUna)
  const dataEnd = seqAdd(conn.sndBufSeq, conn.sendBuffer.length)
  const dataAcked = seqDiff(seqMin(ack, dataEnd), conn.sndBufSeq)
  if (dataAcked > 0) {
    conn.sendBuffer.consume(dataAcked)
    conn.sndBufSeq = seqAdd(conn.sndBufSeq, dataAcked)
    conn.host.adjustMemory(-dataAcked)
  }
  const acked = seqDiff(ack, conn.sndUna)
  conn.sndUna = ack
  if (seqLt(conn.sndNxt, ack)) conn.sndNxt = ack
  if (seqLt(conn.highRxt, ack)) conn.highRxt = ack
  conn.scoreboard.advance(ack)
  conn.retransmits = 0
  conn.lastProgressAt = now
  // RFC 8985 7: an ACK of new data re-arms the probe timer (transmit does); the probe is answered once acknowledged.
  conn.tlpAt = Infinity
  if (conn.tlpEnd !== -1 && seqGe(ack, conn.tlpEnd)) conn.tlpEnd = -1
  conn.rxtMark = retransmitMarkAt(conn, ack)

  // RTT: every ACK of new data with an echoed timestamp (RFC 7323 4), else one timed segment (RFC 6298 3).
  if (conn.timestamps && seg.timestamp && seg.tsEcr !== 0) {
    const sample = (conn.tsNow(now) - seg.tsEcr) >>> 0
    if (sample < 0x7fffffff) conn.rtt.sample(sample, Math.max(1, Math.ceil(flightBefore / (2 * conn.smss))))
  } else if (conn.rttTiming && seqGe(ack, conn.rttSeq)) {
    conn.rtt.sample(now - conn.rttStart)
    conn.rttTiming = false
  }

  if (conn.inRecovery) {
    if (seqGe(ack, conn.recoveryPoint)) {
      // RFC 6675 5 / RFC 6582 3.2 step 3: full acknowledgment ends recovery.
      conn.inRecovery = false
      conn.dupAcks = 0
      conn.lostBelow = -1
      conn.cc.onRecoveryEnd(now)
      c.events.inc('recovery_end')
    } else if (!conn.sack) {
      // RFC 6582 3.2 step 5: a partial ACK retransmits the next unacknowledged segment at once.
      conn.dupAcks = 0
      retransmitFirst(conn, now, 'fast')
    }
  } else {
    conn.dupAcks = 0
    conn.cc.onAck(acked, now, conn.rtt.srtt, conn.cwndLimited)
  }

  // RFC 6298 5.2 / 5.3: stop the timer when all is acknowledged, else restart it.
  if (conn.sndUna === conn.sndMax) {
    conn.rtoAt = Infinity
    conn.unackedSince = Infinity
  } else {
    conn.rtoAt = now + conn.rtt.rto
    conn.unackedSince = now
  }
  conn.queueWritable()
}

/**
 * Forgets the retransmissions the ACK covered and returns the mark (SND.MAX then) of the latest
 * retransmission of the segment now at SND.UNA, or -1 when it was not retransmitted.
 */
function retransmitMarkAt (conn: TcpConnection, una: number): number {
  const log = conn.rxtLog
  let mark = -1
  let kept = 0
  for (let i = 0; i < log.length; i += 2) {
    if (seqLt(log[i], una)) continue
    if (log[i] === una) mark = log[i + 1]
    log[kept++] = log[i]
    log[kept++] = log[i + 1]
  }
  log.length = kept
  return mark
}

function duplicateAck (conn: TcpConnection, now: number): void {
  conn.dupAcks++
  conn.host.counters.events.inc('duplicate_ack')
  if (conn.inRecovery) return
  const lossSignal = conn.dupAcks >= DUP_THRESH || (conn.sack && conn.scoreboard.isLost(conn.sndUna, conn.smss))
  // RFC 6582 3.2 step 2 / RFC 6675 5 step 4: only data sent after the last recovery counts.
  if (!lossSignal || seqLt(conn.sndUna, conn.recoveryPoint)) return
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
  const board = conn.scoreboard
  const probeSacked = conn.tlpEnd !== -1 && seqLt(conn.sndUna, conn.tlpEnd) && seqGe(board.highest, conn.tlpEnd)
  if (!conn.inRecovery) {
    if (probeSacked && seqGe(conn.sndUna, conn.recoveryPoint)) {
      conn.host.counters.events.inc('probe_found_loss')
      const probeEnd = conn.tlpEnd
      enterRecovery(conn, now)
      conn.lostBelow = probeEnd
    }
    return
  }
  if (probeSacked && conn.lostBelow !== conn.tlpEnd) {
    // A probe in recovery (the ACKs had stopped: what is missing below it holds the pipe full).
    conn.host.counters.events.inc('probe_found_loss')
    conn.lostBelow = conn.tlpEnd
  }
  if (conn.rxtMark !== -1 && seqGt(board.starts[0], conn.sndUna) &&
    board.sackedBetween(conn.rxtMark, conn.sndMax) > (DUP_THRESH - 1) * conn.smss) {
    conn.host.counters.events.inc('lost_retransmit')
    conn.rxtMark = -1
    conn.highRxt = conn.sndUna
  }
}

function enterRecovery (conn: TcpConnection, now: number): void {
  conn.tlpAt = Infinity
  conn.tlpEnd = -1
  conn.inRecovery = true
  conn.lostBelow = -1
  conn.recoveryPoint = conn.sndMax
  conn.highRxt = conn.sndUna
  conn.cc.onLoss(now, seqDiff(conn.sndMax, conn.sndUna))
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

  if (len > 0) {
    // Trim what was already received.
    const behind = seqDiff(conn.rcvNxt, seq)
    if (behind > 0) {
      conn.ackNow = true
      if (behind >= len) {
        len = 0
      } else {
        off += behind
        len -= behind
        seq = conn.rcvNxt
      }
    }
    // Trim what lies beyond the advertised window.
    const room = seqDiff(conn.rcvAdvRight, seq)
    if (len > room) {
      c.dropped.inc(room <= 0 ? 'zero_window' : 'beyond_window')
      conn.ackNow = true
      len = Math.max(0, room)
    }
  }

  if (len > 0) {
    if (len > conn.rcvMss) conn.rcvMss = len
    if (seq === conn.rcvNxt) {
      conn.deliver(datagram.subarray(off, off + len))
      conn.rcvNxt = seqAdd(conn.rcvNxt, len)
      conn.ackPendingBytes += len
      if (!conn.reassembly.empty) {
        const before = conn.reassembly.bytes
        const chunks = conn.reassembly.takeInOrder(conn.rcvNxt)
        if (chunks !== null) {
          for (const chunk of chunks) {
            conn.deliver(chunk)
            conn.rcvNxt = seqAdd(conn.rcvNxt, chunk.length)
          }
          // RFC 5681 4.2: ACK at once when a segment fills (part of) a gap (its bytes are counted above).
          ackOwed(conn, conn.sack)
        }
        conn.host.adjustMemory(conn.reassembly.bytes - before)
      }
      // RFC 5681 4.2 / RFC 9293 3.8.6.3: ACK at least every second full-sized segment; else delay.
      // With batched input the ACK goes at the end of the batch, once for all its segments (as a
      // kernel with GRO does): the batch is what the host read in one go, well under a millisecond.
      if (conn.ackPendingBytes >= 2 * conn.rcvMss) ackOwed(conn, true)
      else if (conn.delackAt === Infinity) conn.delackAt = now + conn.options.delayedAck
    } else {
      const added = conn.reassembly.insert(seq, datagram.subarray(off, off + len))
      if (added < 0) c.dropped.inc('out_of_order_limit')
      else if (added > 0) conn.host.adjustMemory(added)
      // RFC 5681 4.2: an out-of-order segment is acknowledged at once (a duplicate ACK with SACK).
      conn.ackPendingBytes += len
      ackOwed(conn, conn.sack)
    }
  }

  if ((seg.flags & TCP_FIN) !== 0) {
    if (!acceptsData(conn.state) || conn.finReceived) {
      // A retransmitted FIN in CLOSE-WAIT, CLOSING, LAST-ACK or TIME-WAIT: acknowledge it again.
      conn.ackNow = true
    } else {
      const finSeq = seqAdd(seg.seq, (isSyn ? 1 : 0) + seg.payloadLen)
      if (finSeq === conn.rcvNxt) finArrives(conn, now)
      else if (seqGt(finSeq, conn.rcvNxt) && seqLe(finSeq, conn.rcvAdvRight)) conn.pendingFinSeq = finSeq
    }
  }
  if (conn.pendingFinSeq !== -1 && conn.pendingFinSeq === conn.rcvNxt && !conn.finReceived) finArrives(conn, now)
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
  if (mayWait && conn.host.batching && conn.ackPendingBytes < MAX_BATCHED_ACK_BYTES) {
    if (!conn.ackAtBatchEnd) {
      conn.ackAtBatchEnd = true
      conn.host.defer(conn)
    }
  } else {
    conn.ackNow = true
  }
}

/** RFC 9293 3.10.7.4 eighth check. */
function finArrives (conn: TcpConnection, now: number): void {
  conn.pendingFinSeq = -1
  conn.finReceived = true
  conn.rcvNxt = seqAdd(conn.rcvNxt, 1)
  conn.ackNow = true
  conn.queueEnd()
  switch (conn.state) {
    case SYN_RECEIVED:
    case ESTABLISHED:
      conn.setState(CLOSE_WAIT, now)
      break
    case FIN_WAIT_1: {
      const finAcked = conn.finQueued && seqGt(conn.sndUna, seqAdd(conn.sndBufSeq, conn.sendBuffer.length))
      if (finAcked) {
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
