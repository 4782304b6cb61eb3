export type { CongestionControl, CongestionControlName } from './types.ts'
import type { CongestionControl, CongestionControlName } from './types.ts'
import { NewReno } from './newreno.ts'
import { Cubic } from './cubic.ts'

export { NewReno, Cubic }

export function createCongestionControl (name: CongestionControlName, smss: number, initialWindow: number): CongestionControl {
  return name === 'newreno' ? new NewReno(smss, initialWindow) : new Cubic(smss, initialWindow)
}
