/**
 * Transmission: what to send now given cwnd, the peer's window, Nagle and SWS avoidance
 * (RFC 9293 3.8.6.2.1), loss recovery (RFC 6675 NextSeg / SetPipe with SACK, RFC 6582 NewReno
 * without), FIN placement, delayed and immediate ACKs, probes and resets.
 */
import type { TcpConnection } from './connection.ts'
import { TCP_SYN, TCP_ACK, TCP_RST, TCP_FIN, TCP_PSH } from '../../../proto/wire/tcp.ts'
import { seqAdd, seqDiff, seqGt, seqLt, seqLe, seqMax } from './seq.ts'
import { MAX_RETRANSMIT_MARKS, MAX_SACK_BLOCKS, MAX_SACK_BLOCKS_WITH_TS, PACE_BURST_MS, PACE_BURST_SEGMENTS, PACE_MIN_SRTT, TLP_DELAYED_ACK, TLP_MIN_TIMEOUT } from './constants.ts'
import { ESTABLISHED, FIN_WAIT_1, CLOSE_WAIT, CLOSING, LAST_ACK, SYN_SENT, SYN_RECEIVED } from './state.ts'
import { buildDatagram } from './segment.ts'

/** States in which data or FIN may be (re)transmitted. */
function sendsData (state: number): boolean {
  return state === ESTABLISHED || state === CLOSE_WAIT || state === FIN_WAIT_1 || state === LAST_ACK || state === CLOSING
}

/** Sends everything the windows allow, then an ACK if one is due and nothing carried it. */
export function transmit (conn: TcpConnection, now: number): void {
  let sent = false
  if (sendsData(conn.state)) {
    const sackSpace = prepareSack(conn)
    const maxPayload = conn.smss - sackSpace
    while (true) {
      if (conn.paceNext > now) {
        // Paced: the rest leaves when the pacing timer fires. Data waiting here counts as using the
        // window (RFC 7661 is about an application that does not fill it; this one would).
        conn.paceAt = conn.paceNext
        if (conn.hasUnsentData()) conn.cwndLimited = true
        break
      }
      if (conn.inRecovery ? !recoveryStep(conn, now, maxPayload) : !normalStep(conn, now, maxPayload)) break
      sent = true
    }
    if (conn.paceAt !== Infinity && conn.paceNext <= now) conn.paceAt = Infinity
    updatePersist(conn, now)
    armTailLossProbe(conn, now)
  }
  if (conn.ackNow && !sent) sendAck(conn, now)
}

/** Bytes of SACK option the next segments will carry (RFC 2018 4: report what the queue holds). */
function prepareSack (conn: TcpConnection): number {
  if (!conn.sack || conn.reassembly.empty) {
    conn.sackScratch.length = 0
    return 0
  }
  const n = conn.reassembly.sackBlocks(conn.sackScratch, conn.timestamps ? MAX_SACK_BLOCKS_WITH_TS : MAX_SACK_BLOCKS)
  return n > 0 ? 4 + 8 * n : 0
}

/** Outside recovery: send from SND.NXT (after an RTO, SND.NXT < SND.MAX: skip SACKed data). */
function normalStep (conn: TcpConnection, now: number, maxPayload: number): boolean {
  if (seqLt(conn.sndNxt, conn.sndMax) && !conn.scoreboard.empty) {
    const end = conn.scoreboard.sackedRangeEnd(conn.sndNxt)
    if (end !== -1) {
      conn.sndNxt = end
      return true
    }
  }
  let flight = seqDiff(conn.sndNxt, conn.sndUna)
  if (!conn.scoreboard.empty) flight -= conn.scoreboard.sackedBetween(conn.sndUna, conn.sndNxt)
  return sendNext(conn, now, maxPayload, conn.cc.cwnd - flight)
}

/** RFC 6675 5 step (C): while cwnd - pipe >= 1 SMSS, NextSeg() and send it. */
function recoveryStep (conn: TcpConnection, now: number, maxPayload: number): boolean {
  const pipe = conn.sack
    ? conn.scoreboard.pipe(conn.sndUna, conn.sndMax, conn.highRxt, conn.smss, conn.lostBelow)
    : Math.max(0, seqDiff(conn.sndMax, conn.sndUna) - conn.dupAcks * conn.smss) + Math.max(0, seqDiff(conn.highRxt, conn.sndUna))
  const room = conn.cc.cwnd - pipe
  if (room < conn.smss) {
    conn.cwndLimited = true
    return false
  }
  if (conn.sack) {
    // Rule 1: the first lost, not yet retransmitted octets.
    const hole = conn.scoreboard.nextHole(conn.sndUna, conn.highRxt, conn.smss, true, conn.holeEnd, conn.lostBelow)
    if (hole !== -1) {
      if (hole === conn.sndUna) conn.rxtMark = conn.sndMax
      retransmitRange(conn, hole, Math.min(maxPayload, seqDiff(conn.holeEnd[0], hole)), now, 'sack')
      return true
    }
  }
  // Rule 2: new data.
  if (conn.sndNxt === conn.sndMax && sendNext(conn, now, maxPayload, room)) return true
  if (conn.sack) {
    // Rule 3: a hole not yet presumed lost.
    const hole = conn.scoreboard.nextHole(conn.sndUna, conn.highRxt, conn.smss, false, conn.holeEnd, conn.lostBelow)
    if (hole !== -1) {
      retransmitRange(conn, hole, Math.min(maxPayload, seqDiff(conn.holeEnd[0], hole)), now, 'sack')
      return true
    }
  }
  return false
}

/**
 * One segment from SND.NXT within `cwndRoom` and the peer's window. Applies sender SWS avoidance
 * and Nagle (RFC 9293 3.8.6.2.1); puts FIN on the segment that ends the data.
 */
function sendNext (conn: TcpConnection, now: number, maxPayload: number, cwndRoom: number): boolean {
  const dataEnd = seqAdd(conn.sndBufSeq, conn.sendBuffer.length)
  const avail = seqDiff(dataEnd, conn.sndNxt)
  const finPending = conn.finQueued && seqLe(conn.sndNxt, dataEnd)
  if (avail <= 0 && !finPending) {
    conn.cwndLimited = false
    return false
  }
  const wndRoom = seqDiff(seqAdd(conn.sndUna, conn.sndWnd), conn.sndNxt)
  const full = Math.min(avail, maxPayload)
  let len = full
  let byCwnd = false
  if (len > wndRoom) len = Math.max(0, wndRoom)
  if (len > cwndRoom) {
    len = Math.max(0, Math.floor(cwndRoom))
    byCwnd = true
  }
  const fin = finPending && seqAdd(conn.sndNxt, len) === dataEnd
  if (byCwnd) conn.cwndLimited = true
  if (len === 0 && !fin) return false
  if (len > 0 && len < full) {
    // Shorter than it could be: only to use a peer window that will not grow without it (SWS avoidance).
    const flight = seqDiff(conn.sndNxt, conn.sndUna)
    if (byCwnd || !(flight === 0 || len >= (conn.maxSndWnd >> 1))) return false
  } else if (len > 0 && len < maxPayload && !conn.noDelay && seqDiff(conn.sndNxt, conn.sndUna) > 0 && !fin) {
    // Nagle: one small segment outstanding at a time.
    return false
  }
  const retransmission = seqLt(conn.sndNxt, conn.sndMax)
  sendData(conn, conn.sndNxt, len, fin, now, retransmission ? 'rto' : '')
  conn.sndNxt = seqAdd(conn.sndNxt, len + (fin ? 1 : 0))
  conn.sndMax = seqMax(conn.sndMax, conn.sndNxt)
  return true
}

function retransmitRange (conn: TcpConnection, seq: number, len: number, now: number, cause: string): void {
  const dataEnd = seqAdd(conn.sndBufSeq, conn.sendBuffer.length)
  const fin = conn.finQueued && seqAdd(seq, len) === dataEnd && seqLt(dataEnd, conn.sndMax)
  sendData(conn, seq, len, fin, now, cause)
  conn.highRxt = seqMax(conn.highRxt, seqAdd(seq, len + (fin ? 1 : 0)))
  const log = conn.rxtLog
  if (log.length >= 2 * MAX_RETRANSMIT_MARKS) log.splice(0, 2)
  log.push(seq, conn.sndMax)
}

/** Retransmits the segment at SND.UNA (fast retransmit, NewReno partial ACK). */
export function retransmitFirst (conn: TcpConnection, now: number, cause: string): void {
  prepareSack(conn)
  const dataEnd = seqAdd(conn.sndBufSeq, conn.sendBuffer.length)
  const len = Math.max(0, Math.min(seqDiff(dataEnd, conn.sndUna), seqDiff(conn.sndMax, conn.sndUna), conn.smss - (conn.sackScratch.length > 0 ? 4 + 4 * conn.sackScratch.length : 0)))
  if (len === 0 && !(conn.finQueued && conn.sndUna === dataEnd && seqLt(dataEnd, conn.sndMax))) return
  conn.rxtMark = conn.sndMax
  retransmitRange(conn, conn.sndUna, len, now, cause)
}

/**
 * RFC 8985 7.2: with data outstanding, a probe is due 2 SRTT (at least TLP_MIN_TIMEOUT; plus
 * TLP_DELAYED_ACK when one segment is out) after the last transmission or ACK, when that comes
 * before the retransmission timeout. One probe until an ACK of new data. Also in fast recovery
 * (RFC 8985 probes only outside it; QUIC's PTO has no such limit): when the ACK that would end a
 * recovery is lost, nothing else answers before the RTO, and with 1 % loss each way that was
 * most of the RTOs of a bulk transfer, 200 ms each.
 */
function armTailLossProbe (conn: TcpConnection, now: number): void {
  if (!conn.options.tailLossProbe || conn.tlpEnd !== -1 || conn.tlpAt !== Infinity) return
  if (conn.sndUna === conn.sndMax || conn.rtoAt === Infinity || !conn.rtt.hasSample) return
  const srtt = conn.rtt.srtt
  let pto = Math.max(2 * srtt, TLP_MIN_TIMEOUT)
  if (seqDiff(conn.sndMax, conn.sndUna) <= conn.smss) pto = Math.max(pto, 1.5 * srtt + TLP_DELAYED_ACK)
  if (now + pto < conn.rtoAt) conn.tlpAt = now + pto
}

/**
 * RFC 8985 7.3: the probe is the last segment sent, again; the retransmission timer restarts.
 * RFC 8985 prefers a new segment where there is one, but a receiver may hold its ACK for a lone
 * in-order segment (Linux up to 40 ms, RFC 9293 up to 500), while a duplicate or out-of-order
 * one is answered at once (RFC 5681 4.2): when only the ACKs were lost, a new segment turned each
 * of them into a stall of the peer's delayed-ACK timer. The probe's ACK either acknowledges a
 * tail whose ACKs were lost, or SACKs the probe above lost segments, which input.ts then treats
 * as lost (sackLossChecks).
 */
export function tailLossProbe (conn: TcpConnection, now: number): void {
  conn.tlpAt = Infinity
  if (!sendsData(conn.state) || conn.sndUna === conn.sndMax) return
  const maxPayload = conn.smss - prepareSack(conn)
  const dataEnd = seqAdd(conn.sndBufSeq, conn.sendBuffer.length)
  const finSent = conn.finQueued && seqGt(conn.sndMax, dataEnd)
  const end = finSent ? dataEnd : conn.sndMax
  const start = seqMax(conn.sndUna, seqAdd(end, -maxPayload))
  const len = Math.max(0, seqDiff(end, start))
  if (len === 0 && !finSent) return
  sendData(conn, start, len, finSent, now, 'tlp')
  conn.tlpEnd = conn.sndMax
  conn.host.counters.events.inc('tail_loss_probe')
  conn.rtoAt = now + conn.rtt.rto
}

function sendData (conn: TcpConnection, seq: number, len: number, fin: boolean, now: number, retransmitCause: string): void {
  const dataEnd = seqAdd(conn.sndBufSeq, conn.sendBuffer.length)
  let flags = TCP_ACK
  if (fin) flags |= TCP_FIN
  if (len > 0 && seqAdd(seq, len) === dataEnd) flags |= TCP_PSH
  emitSegment(conn, seq, flags, len, now)
  if (conn.options.pacing) pace(conn, len, now)
  if (retransmitCause !== '') {
    conn.host.counters.retransmits.inc(retransmitCause)
    // Karn: a retransmitted segment cannot be timed.
    if (conn.rttTiming && seqLt(seq, conn.rttSeq)) conn.rttTiming = false
  } else if (!conn.timestamps && !conn.rttTiming) {
    conn.rttTiming = true
    conn.rttSeq = seqAdd(seq, len + (fin ? 1 : 0))
    conn.rttStart = now
  }
  // RFC 6298 5.1: the timer runs whenever data is outstanding.
  if (conn.rtoAt === Infinity) conn.rtoAt = now + conn.rtt.rto
  if (conn.unackedSince === Infinity) conn.unackedSince = now
}

/**
 * Pacing, as Linux's sk_pacing_rate: 2 x cwnd / SRTT while cwnd is below half of ssthresh (slow
 * start), 1.2 x cwnd / SRTT after. A window then spreads over the round trip instead of leaving as
 * one burst that overflows a shallow queue on the path (a UDP socket buffer of a WireGuard peer
 * holds ~100 datagrams). Bursts of PACE_BURST_MS worth (at least PACE_BURST_SEGMENTS) still leave
 * at once: the stack's single timer has millisecond granularity.
 */
function pace (conn: TcpConnection, len: number, now: number): void {
  if (!conn.rtt.hasSample) return
  const cc = conn.cc
  const rate = (cc.cwnd < cc.ssthresh / 2 ? 2 : 1.2) * cc.cwnd / Math.max(conn.rtt.srtt, PACE_MIN_SRTT)
  const allowance = Math.max(PACE_BURST_MS, PACE_BURST_SEGMENTS * conn.smss / rate)
  const from = conn.paceNext < now - allowance ? now - allowance : conn.paceNext
  conn.paceNext = from + len / rate
}

/** Zero-window probing (RFC 9293 3.8.6.1): armed when data waits on a closed window with nothing in flight. */
function updatePersist (conn: TcpConnection, now: number): void {
  const waiting = conn.sndUna === conn.sndMax && conn.hasUnsentData() &&
    seqDiff(seqAdd(conn.sndUna, conn.sndWnd), conn.sndNxt) <= 0
  if (!waiting) {
    conn.persistAt = Infinity
    return
  }
  if (conn.persistAt === Infinity) conn.persistAt = now + conn.rtt.rto
}

// ---- Individual segments ----

/** Fills the scratch header for a segment of this connection and hands the datagram to the host. */
function emitSegment (conn: TcpConnection, seq: number, flags: number, payloadLen: number, now: number, ackValue = conn.rcvNxt): void {
  const r = conn.repr
  const isSyn = (flags & TCP_SYN) !== 0
  r.srcPort = conn.localPort
  r.dstPort = conn.remotePort
  r.seq = seq
  r.ack = (flags & TCP_ACK) !== 0 ? ackValue : 0
  r.flags = flags
  r.urgent = 0
  r.window = (flags & TCP_RST) !== 0 ? 0 : windowField(conn, isSyn)
  if (!isSyn) {
    r.mss = 0
    r.windowScale = -1
    r.sackPermitted = false
  }
  r.timestamp = conn.timestamps || (isSyn && (flags & TCP_ACK) === 0 && conn.options.timestamps)
  r.tsVal = r.timestamp ? conn.tsNow(now) : 0
  r.tsEcr = r.timestamp && (flags & TCP_ACK) !== 0 ? conn.tsRecent : 0
  r.sackBlocks = !isSyn && (flags & TCP_ACK) !== 0 && (flags & TCP_RST) === 0 && conn.sackScratch.length > 0 ? conn.sackScratch : null
  const payloadOffset = payloadLen > 0 ? seqDiff(seq, conn.sndBufSeq) : 0
  const datagram = buildDatagram(conn.localAddress, conn.remoteAddress, conn.host.nextIpIdent(), r, conn.sendBuffer, payloadOffset, payloadLen)
  if ((flags & TCP_ACK) !== 0 && (flags & TCP_RST) === 0) {
    conn.lastAckSent = conn.rcvNxt
    conn.ackPendingBytes = 0
    conn.delackAt = Infinity
    conn.ackNow = false
  }
  conn.host.counters.segments.inc('out')
  conn.host.emit(datagram)
}

/**
 * The window field (RFC 9293 3.8.6.2.2 receiver SWS avoidance; RFC 7323 2.3 scaling): the right
 * edge never moves left and only moves right in steps of min(RCV.BUFF / 2, MSS). SYN windows are
 * not scaled (RFC 7323 2.2).
 */
function windowField (conn: TcpConnection, syn: boolean): number {
  const space = conn.receiveSpace()
  if (syn) {
    const w = Math.min(space, 0xffff)
    conn.rcvAdvRight = seqAdd(conn.rcvNxt, w)
    return w
  }
  let right = seqAdd(conn.rcvNxt, space)
  const grow = seqDiff(right, conn.rcvAdvRight)
  if (grow < 0 || grow < Math.min(conn.options.receiveBuffer >> 1, conn.mss)) right = conn.rcvAdvRight
  let wnd = seqDiff(right, conn.rcvNxt)
  if (wnd < 0) wnd = 0
  const unit = 1 << conn.rcvShift
  // Round up so the edge never retreats because of scaling granularity.
  const field = Math.min(0xffff, Math.ceil(wnd / unit))
  conn.rcvAdvRight = seqAdd(conn.rcvNxt, field * unit)
  return field
}

/** SYN with our options (RFC 9293 3.7.1 MSS, RFC 7323 WS and TS, RFC 2018 SACK-permitted). */
export function sendSyn (conn: TcpConnection, now: number): void {
  const o = conn.options
  const r = conn.repr
  r.mss = o.mss
  r.windowScale = o.windowScaling ? o.windowShift : -1
  r.sackPermitted = o.sack
  emitSegment(conn, conn.iss, TCP_SYN, 0, now)
  conn.sndNxt = seqAdd(conn.iss, 1)
  conn.sndMax = conn.sndNxt
  if (!conn.rttTiming) {
    conn.rttTiming = true
    conn.rttSeq = conn.sndNxt
    conn.rttStart = now
  }
}

/** SYN-ACK echoing only the options both sides agreed on (RFC 7323 2.2, 3.2; RFC 2018 2). */
export function sendSynAck (conn: TcpConnection, now: number): void {
  const r = conn.repr
  r.mss = conn.options.mss
  r.windowScale = conn.windowScaling ? conn.rcvShift : -1
  r.sackPermitted = conn.sack
  emitSegment(conn, conn.iss, TCP_SYN | TCP_ACK, 0, now)
  conn.sndNxt = seqAdd(conn.iss, 1)
  conn.sndMax = conn.sndNxt
  if (!conn.rttTiming) {
    conn.rttTiming = true
    conn.rttSeq = conn.sndNxt
    conn.rttStart = now
  }
}

export function sendAck (conn: TcpConnection, now: number): void {
  if (conn.state === SYN_SENT) return
  if (conn.state === SYN_RECEIVED) {
    sendSynAck(conn, now)
    return
  }
  prepareSack(conn)
  emitSegment(conn, conn.sndNxt, TCP_ACK, 0, now)
}

/** RFC 5961 3.2 / 4.2 / 5.2 challenge ACK, rate limited per connection (RFC 5961 7). */
export function sendChallengeAck (conn: TcpConnection, now: number): void {
  if (now - conn.challengeWindowStart >= 1000) {
    conn.challengeWindowStart = now
    conn.challengeAcks = 0
  }
  if (conn.challengeAcks >= conn.options.challengeAcksPerSecond) {
    conn.host.counters.dropped.inc('challenge_ack_limited')
    return
  }
  conn.challengeAcks++
  conn.host.counters.events.inc('challenge_ack')
  sendAck(conn, now)
}

/** Keepalive and zero-window probe: an ACK with an old sequence number elicits an ACK (RFC 9293 3.8.4). */
export function sendProbe (conn: TcpConnection, now: number): void {
  prepareSack(conn)
  emitSegment(conn, seqAdd(conn.sndUna, -1), TCP_ACK, 0, now)
}

/** RST for this connection (ABORT, timeouts): <SEQ=SND.NXT><CTL=RST,ACK>. */
export function sendReset (conn: TcpConnection, now: number): void {
  conn.host.counters.events.inc('rst_sent')
  emitSegment(conn, seqMax(conn.sndNxt, conn.sndMax), TCP_RST | TCP_ACK, 0, now)
}

/** RST with a given sequence number and no ACK (an unacceptable ACK, RFC 9293 3.10.7.3 / .4). */
export function sendResetTo (conn: TcpConnection, seq: number, now: number): void {
  conn.host.counters.events.inc('rst_sent')
  emitSegment(conn, seq, TCP_RST, 0, now)
}
