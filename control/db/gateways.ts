/**
 * When control last heard from a gateway, as SQL over the `gateways` table: its latest report, or
 * its hello when it has not reported since. Aliveness, readiness and the operator's events all
 * compare this one expression against the alive window.
 */
export function lastHeardSql (alias?: string): string {
  const c = alias === undefined ? '' : `${alias}.`
  return `greatest(${c}hello_at, coalesce(${c}report_at, ${c}hello_at))`
}
