// The API client: same-origin /v1, the access token in this module's memory only (never in
// storage or URLs); the refresh token lives in the HttpOnly cc_refresh cookie that only the
// server reads (requests below send `X-CC-Session: cookie` to use that mode).

const BASE = '/v1'
const SESSION_HEADER = { 'X-CC-Session': 'cookie' }

let accessToken = null
let refreshing = null
let onSignedOut = () => {}

export class ApiError extends Error {
  constructor (status, code, message, details = {}, retryAfter = null) {
    super(message)
    this.status = status
    this.code = code
    this.details = details ?? {}
    this.retryAfter = retryAfter
  }
}

/** Called when a request finds the session gone (refresh failed): the app shows the sign-in page. */
export function setSignedOutHandler (handler) {
  onSignedOut = handler
}

export function isSignedIn () {
  return accessToken !== null
}

export function forgetSession () {
  accessToken = null
}

async function send (method, path, { body, headers = {}, token = accessToken } = {}) {
  const init = { method, credentials: 'same-origin', cache: 'no-store', headers: { Accept: 'application/json', ...headers } }
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json'
    init.body = JSON.stringify(body)
  }
  if (token !== null && token !== undefined) init.headers.Authorization = `Bearer ${token}`
  let response
  try {
    response = await fetch(BASE + path, init)
  } catch {
    throw new ApiError(0, 'NETWORK_ERROR', 'Could not reach the server. Check your connection and try again.')
  }
  const text = await response.text()
  let data = null
  if (text !== '') {
    try { data = JSON.parse(text) } catch { data = null }
  }
  if (response.ok) return data
  const error = data?.error
  const retryAfter = Number(response.headers.get('Retry-After') ?? error?.details?.retry_after ?? NaN)
  throw new ApiError(response.status, error?.code ?? `HTTP_${response.status}`, error?.message ?? `The server answered ${response.status}`, error?.details ?? {}, Number.isFinite(retryAfter) ? retryAfter : null)
}

/** Renews the access token from the refresh cookie; false when there is no valid session. */
export function refresh () {
  refreshing ??= (async () => {
    try {
      const data = await send('POST', '/auth/refresh', { headers: SESSION_HEADER, token: null })
      accessToken = typeof data?.access_token === 'string' ? data.access_token : null
    } catch {
      // 401/403/422 (no or spent cookie, or an API without cookie sessions) or no network: signed out.
      accessToken = null
    } finally {
      refreshing = null
    }
    return accessToken !== null
  })()
  return refreshing
}

/**
 * A call to the API. Authenticated calls that meet 401 try one cookie refresh and then repeat
 * once; when that fails the app goes to the sign-in page.
 */
export async function api (method, path, body, { auth = true, headers } = {}) {
  try {
    return await send(method, path, { body, headers, token: auth ? accessToken : null })
  } catch (err) {
    if (!auth || !(err instanceof ApiError) || err.status !== 401) throw err
    if (await refresh()) return await send(method, path, { body, headers })
    accessToken = null
    onSignedOut()
    throw err
  }
}

export async function signIn (email, password) {
  const data = await send('POST', '/auth/login', { body: { email, password }, headers: SESSION_HEADER, token: null })
  accessToken = data.access_token
  return data.user
}

/** Ends this sign-in on the server (the cookie is cleared there) and forgets the token here. */
export async function signOut () {
  try {
    await send('POST', '/auth/logout', { headers: SESSION_HEADER, token: null })
  } catch {
    // Already gone, or the network is down: the local session ends either way.
  } finally {
    accessToken = null
  }
}
