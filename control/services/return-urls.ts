/** The allow-list of return URLs a client may give Stripe's Customer Portal (CC_BILLING_PORTAL_RETURN_URLS). */

/** Is `url` under one of `allowed` (same origin, path at or below the entry's path)? */
export function isAllowedReturnUrl (url: string, allowed: string[]): boolean {
  let target: URL
  try { target = new URL(url) } catch { return false }
  if (!['http:', 'https:'].includes(target.protocol) || target.username !== '' || target.password !== '') return false
  return allowed.some(entry => {
    const base = new URL(entry)
    if (base.origin !== target.origin) return false
    const prefix = base.pathname.endsWith('/') ? base.pathname : `${base.pathname}/`
    return target.pathname === base.pathname || target.pathname.startsWith(prefix)
  })
}
