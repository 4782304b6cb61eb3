/**
 * Transmission: what to send now given cwnd, the peer's window, Nagle and SWS avoidance
 * (RFC 9293 3.8.6.2.1), loss recovery (RFC 6675 NextSeg / SetPipe with SACK, RFC 6582 NewReno
 * without), FIN placement, delayed and immediate ACKs, probes and resets.
 */
import type { TcpConnection } from './connection.ts'
import { TCP_SYN, TCP_ACK, TCP_RST, TCP_FIN, TCP_PSH } from '../../../proto/wire/tcp.ts'
import { seqAdd, seqDiff, seqGt, seqLt, seqLe, seqMax } from './seq.ts'
import { MAX_SACK_BLOCKS, MAX_SACK_BLOCKS_WITH_TS, TLP_DELAYED_ACK, TLP_MIN_TIMEOUT } from './constants.ts'
import { burstAllowance, nextDue, pacingRate } from './pacer.ts'
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
    const timers = conn.timers
    const recovery = conn.recovery
    const sackSpace = prepareSack(conn)
    const maxPayload = conn.smss - sackSpace
    while (true) {
      if (timers.paceNext > now) {
        // Paced: the rest leaves when the pacing timer fires. Data waiting here counts as using the
        // window (RFC 7661 is about an application that does not fill it; this one would).
        timers.paceUntil(timers.paceNext)
        if (conn.snd.hasUnsent()) recovery.setCwndLimited(true)
        break
      }
      if (!conn.host.turnRoom(conn)) {
        // This turn's share is used up: the host resumes us at the turn's end.
        if (conn.snd.hasUnsent()) recovery.setCwndLimited(true)
        break
      }
      if (recovery.active ? !recoveryStep(conn, now, maxPayload) : !normalStep(conn, now, maxPayload)) break
      sent = true
    }
    if (timers.paceAt !== Infinity && timers.paceNext <= now) timers.stopPace()
    updatePersist(conn, now)
    armTailLossProbe(conn, now)
  }
  if (conn.rcv.ackNow && !sent) sendAck(conn, now)
}

/** Bytes of SACK option the next segments will carry (RFC 2018 4: report what the queue holds). */
function prepareSack (conn: TcpConnection): number {
  if (!conn.sack || conn.rcv.reassembly.empty) {
    conn.sackScratch.length = 0
    return 0
  }
  const n = conn.rcv.reassembly.sackBlocks(conn.sackScratch, conn.timestamps ? MAX_SACK_BLOCKS_WITH_TS : MAX_SACK_BLOCKS)
  return n > 0 ? 4 + 8 * n : 0
}

/** Outside recovery: send from SND.NXT (after an RTO, SND.NXT < SND.MAX: skip SACKed data). */
function normalStep (conn: TcpConnection, now: number, maxPayload: number): boolean {
  const snd = conn.snd
  const board = conn.recovery.scoreboard
  if (seqLt(snd.nxt, snd.max) && !board.empty) {
    const end = board.sackedRangeEnd(snd.nxt)
    if (end !== -1) {
      snd.skipTo(end)
      return true
    }
  }
  let flight = seqDiff(snd.nxt, snd.una)
  if (!board.empty) flight -= board.sackedBetween(snd.una, snd.nxt)
  return sendNext(conn, now, maxPayload, conn.cc.cwnd - flight)
}

/** RFC 6675 5 step (C): while cwnd - pipe >= 1 SMSS, NextSeg() and send it. */
function recoveryStep (conn: TcpConnection, now: number, maxPayload: number): boolean {
  const snd = conn.snd
  const recovery = conn.recovery
  const room = conn.cc.cwnd - recovery.pipe(conn.sack, snd.una, snd.max, conn.smss)
  if (room < conn.smss) {
    recovery.setCwndLimited(true)
    return false
  }
  if (conn.sack) {
    // Rule 1: the first lost, not yet retransmitted octets.
    const hole = recovery.nextHole(snd.una, conn.smss, true, conn.holeEnd)
    if (hole !== -1) {
      if (hole === snd.una) recovery.markFirstHole(snd.max)
      retransmitRange(conn, hole, Math.min(maxPayload, seqDiff(conn.holeEnd[0], hole)), now, 'sack')
      return true
    }
  }
  // Rule 2: new data.
  if (snd.nxt === snd.max && sendNext(conn, now, maxPayload, room)) return true
  if (conn.sack) {
    // Rule 3: a hole not yet presumed lost.
    const hole = recovery.nextHole(snd.una, conn.smss, false, conn.holeEnd)
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
  const snd = conn.snd
  const nxt = snd.nxt
  const dataEnd = snd.dataEnd
  const avail = seqDiff(dataEnd, nxt)
  const finPending = snd.finQueued && seqLe(nxt, dataEnd)
  if (avail <= 0 && !finPending) {
    conn.recovery.setCwndLimited(false)
    return false
  }
  const wndRoom = snd.windowRoom()
  const full = Math.min(avail, maxPayload)
  let len = full
  let byCwnd = false
  if (len > wndRoom) len = Math.max(0, wndRoom)
  if (len > cwndRoom) {
    len = Math.max(0, Math.floor(cwndRoom))
    byCwnd = true
  }
  const fin = finPending && seqAdd(nxt, len) === dataEnd
  if (byCwnd) conn.recovery.setCwndLimited(true)
  if (len === 0 && !fin) return false
  if (len > 0 && len < full) {
    // Shorter than it could be: only to use a peer window that will not grow without it (SWS avoidance).
    const flight = seqDiff(nxt, snd.una)
    if (byCwnd || !(flight === 0 || len >= (snd.maxWnd >> 1))) return false
  } else if (len > 0 && len < maxPayload && !conn.noDelay && seqDiff(nxt, snd.una) > 0 && !fin) {
    // Nagle: one small segment outstanding at a time.
    return false
  }
  const retransmission = seqLt(nxt, snd.max)
  sendData(conn, nxt, len, fin, now, retransmission ? 'rto' : '')
  snd.advance(len, fin)
  return true
}

function retransmitRange (conn: TcpConnection, seq: number, len: number, now: number, cause: string): void {
  const snd = conn.snd
  const dataEnd = snd.dataEnd
  const fin = snd.finQueued && seqAdd(seq, len) === dataEnd && seqLt(dataEnd, snd.max)
  sendData(conn, seq, len, fin, now, cause)
  conn.recovery.retransmitted(seq, seqAdd(seq, len + (fin ? 1 : 0)), snd.max)
}

/** Retransmits the segment at SND.UNA (fast retransmit, NewReno partial ACK). */
export function retransmitFirst (conn: TcpConnection, now: number, cause: string): void {
  prepareSack(conn)
  const snd = conn.snd
  const dataEnd = snd.dataEnd
  const len = Math.max(0, Math.min(seqDiff(dataEnd, snd.una), seqDiff(snd.max, snd.una), conn.smss - (conn.sackScratch.length > 0 ? 4 + 4 * conn.sackScratch.length : 0)))
  if (len === 0 && !(snd.finQueued && snd.una === dataEnd && seqLt(dataEnd, snd.max))) return
  conn.recovery.markFirstHole(snd.max)
  retransmitRange(conn, snd.una, len, now, cause)
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
  const timers = conn.timers
  if (!conn.options.tailLossProbe || conn.recovery.tlpEnd !== -1 || timers.tlpAt !== Infinity) return
  const snd = conn.snd
  if (snd.una === snd.max || timers.rtoAt === Infinity || !conn.rtt.hasSample) return
  const srtt = conn.rtt.srtt
  let pto = Math.max(2 * srtt, TLP_MIN_TIMEOUT)
  if (seqDiff(snd.max, snd.una) <= conn.smss) pto = Math.max(pto, 1.5 * srtt + TLP_DELAYED_ACK)
  if (now + pto < timers.rtoAt) timers.startTlp(now + pto)
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
  conn.timers.stopTlp()
  const snd = conn.snd
  if (!sendsData(conn.state) || snd.una === snd.max) return
  const maxPayload = conn.smss - prepareSack(conn)
  const dataEnd = snd.dataEnd
  const finSent = snd.finQueued && seqGt(snd.max, dataEnd)
  const end = finSent ? dataEnd : snd.max
  const start = seqMax(snd.una, seqAdd(end, -maxPayload))
  const len = Math.max(0, seqDiff(end, start))
  if (len === 0 && !finSent) return
  sendData(conn, start, len, finSent, now, 'tlp')
  conn.recovery.probeSent(snd.max)
  conn.host.counters.events.inc('tail_loss_probe')
  conn.timers.startRto(now + conn.rtt.rto)
}

function sendData (conn: TcpConnection, seq: number, len: number, fin: boolean, now: number, retransmitCause: string): void {
  let flags = TCP_ACK
  if (fin) flags |= TCP_FIN
  if (len > 0 && seqAdd(seq, len) === conn.snd.dataEnd) flags |= TCP_PSH
  emitSegment(conn, seq, flags, len, now)
  conn.host.dataSent(conn)
  if (conn.options.pacing) pace(conn, len, now)
  if (retransmitCause !== '') {
    conn.host.counters.retransmits.inc(retransmitCause)
    // Karn: a retransmitted segment cannot be timed.
    conn.rtt.retransmitted(seq)
  } else if (!conn.timestamps) {
    conn.rtt.timeSegment(seqAdd(seq, len + (fin ? 1 : 0)), now)
  }
  // RFC 6298 5.1: the timer runs whenever data is outstanding.
  conn.timers.armRto(now + conn.rtt.rto)
  conn.timers.unackedFrom(now)
}

/**
 * Pacing (pacer.ts): a window spreads over the round trip instead of leaving as one burst that
 * overflows a shallow queue on the path (a WireGuard peer's UDP socket buffer holds ~90 datagrams).
 */
function pace (conn: TcpConnection, len: number, now: number): void {
  if (!conn.rtt.hasSample) return
  const cc = conn.cc
  const rate = pacingRate(cc.cwnd, cc.ssthresh, conn.rtt.srtt)
  const allowance = burstAllowance(rate, conn.smss, conn.options.maxBurst)
  conn.timers.nextSegmentDue(nextDue(conn.timers.paceNext, now, len, rate, allowance))
}

/** Zero-window probing (RFC 9293 3.8.6.1): armed when data waits on a closed window with nothing in flight. */
function updatePersist (conn: TcpConnection, now: number): void {
  const snd = conn.snd
  const waiting = snd.una === snd.max && snd.hasUnsent() && snd.windowRoom() <= 0
  if (!waiting) conn.timers.stopPersist()
  else conn.timers.armPersist(now + conn.rtt.rto)
}

// ---- Individual segments ----

/** Fills the scratch header for a segment of this connection and hands the datagram to the host. */
function emitSegment (conn: TcpConnection, seq: number, flags: number, payloadLen: number, now: number): void {
  const r = conn.repr
  const rcv = conn.rcv
  const isSyn = (flags & TCP_SYN) !== 0
  r.srcPort = conn.localPort
  r.dstPort = conn.remotePort
  r.seq = seq
  r.ack = (flags & TCP_ACK) !== 0 ? rcv.nxt : 0
  r.flags = flags
  r.urgent = 0
  r.window = (flags & TCP_RST) !== 0 ? 0 : rcv.advertise(conn.receiveSpace(), isSyn, Math.min(conn.options.receiveBuffer >> 1, conn.mss))
  if (!isSyn) {
    r.mss = 0
    r.windowScale = -1
    r.sackPermitted = false
  }
  r.timestamp = conn.timestamps || (isSyn && (flags & TCP_ACK) === 0 && conn.options.timestamps)
  r.tsVal = r.timestamp ? conn.tsNow(now) : 0
  r.tsEcr = r.timestamp && (flags & TCP_ACK) !== 0 ? conn.tsRecent : 0
  r.sackBlocks = !isSyn && (flags & TCP_ACK) !== 0 && (flags & TCP_RST) === 0 && conn.sackScratch.length > 0 ? conn.sackScratch : null
  const snd = conn.snd
  const payloadOffset = payloadLen > 0 ? seqDiff(seq, snd.bufSeq) : 0
  const datagram = buildDatagram(conn.localAddress, conn.remoteAddress, conn.host.nextIpIdent(), r, snd.buffer, payloadOffset, payloadLen)
  if ((flags & TCP_ACK) !== 0 && (flags & TCP_RST) === 0) {
    rcv.ackSent()
    conn.timers.stopDelack()
  }
  conn.host.counters.segments.inc('out')
  conn.host.emit(datagram)
}

/** SYN with our options (RFC 9293 3.7.1 MSS, RFC 7323 WS and TS, RFC 2018 SACK-permitted). */
export function sendSyn (conn: TcpConnection, now: number): void {
  const o = conn.options
  const r = conn.repr
  r.mss = o.mss
  r.windowScale = o.windowScaling ? o.windowShift : -1
  r.sackPermitted = o.sack
  emitSegment(conn, conn.snd.iss, TCP_SYN, 0, now)
  conn.snd.synSent()
  conn.rtt.timeSegment(conn.snd.nxt, now)
}

/** SYN-ACK echoing only the options both sides agreed on (RFC 7323 2.2, 3.2; RFC 2018 2). */
export function sendSynAck (conn: TcpConnection, now: number): void {
  const r = conn.repr
  r.mss = conn.options.mss
  r.windowScale = conn.windowScaling ? conn.rcv.shift : -1
  r.sackPermitted = conn.sack
  emitSegment(conn, conn.snd.iss, TCP_SYN | TCP_ACK, 0, now)
  conn.snd.synSent()
  conn.rtt.timeSegment(conn.snd.nxt, now)
}

export function sendAck (conn: TcpConnection, now: number): void {
  if (conn.state === SYN_SENT) return
  if (conn.state === SYN_RECEIVED) {
    sendSynAck(conn, now)
    return
  }
  prepareSack(conn)
  emitSegment(conn, conn.snd.nxt, TCP_ACK, 0, now)
}

/** RFC 5961 3.2 / 4.2 / 5.2 challenge ACK, rate limited per connection (RFC 5961 7). */
export function sendChallengeAck (conn: TcpConnection, now: number): void {
  if (!conn.challengeAckAllowed(now)) {
    conn.host.counters.dropped.inc('challenge_ack_limited')
    return
  }
  conn.host.counters.events.inc('challenge_ack')
  sendAck(conn, now)
}

/** Keepalive and zero-window probe: an ACK with an old sequence number elicits an ACK (RFC 9293 3.8.4). */
export function sendProbe (conn: TcpConnection, now: number): void {
  prepareSack(conn)
  emitSegment(conn, seqAdd(conn.snd.una, -1), TCP_ACK, 0, now)
}

/** RST for this connection (ABORT, timeouts): <SEQ=SND.NXT><CTL=RST,ACK>. */
export function sendReset (conn: TcpConnection, now: number): void {
  conn.host.counters.events.inc('rst_sent')
  emitSegment(conn, seqMax(conn.snd.nxt, conn.snd.max), TCP_RST | TCP_ACK, 0, now)
}

/** RST with a given sequence number and no ACK (an unacceptable ACK, RFC 9293 3.10.7.3 / .4). */
export function sendResetTo (conn: TcpConnection, seq: number, now: number): void {
  conn.host.counters.events.inc('rst_sent')
  emitSegment(conn, seq, TCP_RST, 0, now)
}
