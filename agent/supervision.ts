/**
 * The connected state's decisions, sans-IO: fed each probe round's answers and the time, it says
 * what to do (agent.ts probes, waits and performs). Any answer keeps the tunnel `connected`; a
 * gateway silent past deadAfterMs while another answers gets a fresh handshake of its own, once per
 * deadAfterMs; all silent past deadAfterMs starts a recovery, repeated with backoff.
 */
import { backoffWait, type BackoffLimits } from './backoff.ts'

export interface SupervisorOptions {
  deadAfterMs: number
  backoff: BackoffLimits
  /** Kernel mode: with no answer ever, check for blocked UDP after this long; null: never. */
  udpCheckAfterMs: number | null
  /** Latest answered probe per gateway public key (wall-clock ms); shared with the status report. */
  answeredAt: Map<string, number>
  /** When supervision started. */
  now: number
}

/** One probe round: each gateway's key and its round-trip time (null: no answer). */
export interface ProbeRound {
  /** When the round started and when its answers were in. */
  started: number
  now: number
  probes: Array<{ publicKey: string, rttMs: number | null }>
  /** The tunnel's latest received packet of any kind (null: none). */
  heardAt: number | null
}

export type SupervisorAction =
  /** Kernel mode, never an answer: see whether UDP is blocked on the way. */
  | { kind: 'check-udp' }
  /** At least one gateway answered; `rttMs` the fastest. */
  | { kind: 'answered', rttMs: number }
  /** This gateway is silent while another answers: a fresh handshake with it only. */
  | { kind: 'nudge', publicKey: string, silentForMs: number }
  /** Every gateway silent past deadAfterMs: register again and reconnect, then call recovered(). */
  | { kind: 'recover', silentForMs: number }

export class Supervisor {
  readonly #o: SupervisorOptions
  #lastGood: number
  #nextRecoveryAt = 0
  #recoveries = 0
  #udpChecked: boolean
  /** Per gateway: since when it is silent to us, and when to nudge it again. */
  readonly #silentSince = new Map<string, number>()
  readonly #nextNudgeAt = new Map<string, number>()

  constructor (options: SupervisorOptions) {
    this.#o = options
    this.#lastGood = options.now
    this.#udpChecked = options.udpCheckAfterMs === null
  }

  /** The actions for one probe round, in the order to perform them. */
  observe (round: ProbeRound): SupervisorAction[] {
    const { now } = round
    const { answeredAt, deadAfterMs } = this.#o
    const actions: SupervisorAction[] = []
    const answered: number[] = []
    for (const { publicKey, rttMs } of round.probes) {
      if (rttMs !== null) {
        answered.push(rttMs)
        answeredAt.set(publicKey, now)
        this.#silentSince.delete(publicKey)
        this.#nextNudgeAt.delete(publicKey)
      } else if (!this.#silentSince.has(publicKey)) {
        this.#silentSince.set(publicKey, answeredAt.get(publicKey) ?? round.started)
      }
    }
    for (const key of this.#silentSince.keys()) if (!round.probes.some(p => p.publicKey === key)) this.#silentSince.delete(key)
    if (!this.#udpChecked && answered.length === 0 && answeredAt.size === 0 && now - this.#o.now >= this.#o.udpCheckAfterMs!) {
      this.#udpChecked = true
      actions.push({ kind: 'check-udp' })
    }
    if (answered.length > 0) {
      this.#lastGood = now
      this.#recoveries = 0
      this.#nextRecoveryAt = 0
      actions.push({ kind: 'answered', rttMs: Math.min(...answered) })
      for (const { publicKey } of round.probes) {
        const since = this.#silentSince.get(publicKey)
        if (since === undefined || now - since <= deadAfterMs || now < (this.#nextNudgeAt.get(publicKey) ?? 0)) continue
        this.#nextNudgeAt.set(publicKey, now + deadAfterMs)
        actions.push({ kind: 'nudge', publicKey, silentForMs: now - since })
      }
    } else if (round.heardAt !== null && round.heardAt > this.#lastGood) {
      this.#lastGood = round.heardAt
    }
    if (now - this.#lastGood > deadAfterMs && now >= this.#nextRecoveryAt) actions.push({ kind: 'recover', silentForMs: now - this.#lastGood })
    return actions
  }

  /** A recovery ended at `now`: the next one waits deadAfterMs at least, longer as they repeat. */
  recovered (now: number, jitter: number): number {
    const wait = Math.max(this.#o.deadAfterMs, backoffWait(this.#recoveries++, this.#o.backoff, jitter))
    this.#nextRecoveryAt = now + wait
    return wait
  }
}
