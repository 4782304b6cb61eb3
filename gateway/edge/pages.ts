/**
 * The pages the edge itself answers with: small, self-contained HTML (no external assets), never
 * cached, naming the hostname and the request ID so a user can report what they saw.
 */
import { STATUS_CODES } from 'node:http'

export type EdgePage = 'unknown-host' | 'offline' | 'timeout' | 'misdirected' | 'busy' | 'client-busy' | 'slow-upload' | 'bad-request'
  | 'control-unconfigured' | 'control-offline' | 'control-timeout'

interface PageText { status: number, title: string, message: string }

const PAGES: Record<EdgePage, PageText> = {
  'unknown-host': {
    status: 404,
    title: 'No Erugo instance here',
    message: 'No Erugo instance is connected under this address. Check the link, or ask the owner of the share for a new one.',
  },
  offline: {
    status: 502,
    title: 'This Erugo instance is offline',
    message: 'The server behind this address is not reachable right now: it may be turned off, restarting or without internet access. Try again in a few minutes.',
  },
  timeout: {
    status: 504,
    title: 'This Erugo instance did not answer',
    message: 'The server behind this address accepted the request but did not start answering in time. Try again in a few minutes.',
  },
  misdirected: {
    status: 421,
    title: 'Misdirected request',
    message: 'This connection was opened for a different address. Your browser should retry on its own; if not, reload the page.',
  },
  busy: {
    status: 503,
    title: 'This Erugo instance is busy',
    message: 'Too many connections to this server are open at once. Try again in a moment.',
  },
  // RFC 6585 4: this client, not the server, is over a limit.
  'client-busy': {
    status: 429,
    title: 'Too many requests from your address',
    message: 'Your address has too many requests open to this server at once. Wait for some of them to finish, then try again.',
  },
  'slow-upload': {
    status: 408,
    title: 'Upload too slow',
    message: 'The server is busy and this upload had stopped making progress, so it was ended to let others through. Try again in a moment.',
  },
  'bad-request': {
    status: 400,
    title: 'Bad request',
    message: 'The request could not be understood.',
  },
  // Control's names (app.<base>, api.<base>): the dashboard and API, not an instance.
  'control-unconfigured': {
    status: 503,
    title: 'Cloud Connect is not available here',
    message: 'This gateway has not been told where the Cloud Connect service runs, so the dashboard and API cannot be reached through it. The operator has been notified in the gateway\'s log.',
  },
  'control-offline': {
    status: 502,
    title: 'Cloud Connect is unavailable',
    message: 'The Cloud Connect service is not reachable right now. Try again in a few minutes.',
  },
  'control-timeout': {
    status: 504,
    title: 'Cloud Connect did not answer',
    message: 'The Cloud Connect service accepted the request but did not start answering in time. Try again in a few minutes.',
  },
}

/** The page a request for control's route gets instead of an instance's. */
export function controlPage (page: EdgePage): EdgePage {
  return page === 'offline' ? 'control-offline' : page === 'timeout' ? 'control-timeout' : page
}

export function pageStatus (page: EdgePage): number {
  return PAGES[page].status
}

function escapeHtml (text: string): string {
  return text.replace(/[&<>"']/g, c => `&#${c.charCodeAt(0)};`)
}

/** The HTML body for `page`. `host` is shown as given (escaped): it may be anything a client typed. */
export function renderPage (page: EdgePage, details: { host?: string, requestId: string }): string {
  const p = PAGES[page]
  const host = details.host !== undefined && details.host !== '' ? `<p class="host">${escapeHtml(details.host.slice(0, 255))}</p>` : ''
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<meta name="robots" content="noindex"><title>${p.status} ${escapeHtml(p.title)}</title>
<style>body{margin:0;font:16px/1.5 system-ui,sans-serif;background:#f4f5f7;color:#1d2330;display:flex;min-height:100vh;align-items:center;justify-content:center}
main{max-width:34rem;margin:1rem;padding:2rem;background:#fff;border-radius:12px;box-shadow:0 1px 4px #0002}
h1{font-size:1.3rem;margin:0 0 .5rem}.code{color:#6a7180;font-size:.9rem}.host{font-family:monospace;word-break:break-all}
footer{margin-top:1.5rem;color:#6a7180;font-size:.8rem}</style></head>
<body><main><div class="code">${p.status} ${escapeHtml(STATUS_CODES[p.status] ?? '')}</div><h1>${escapeHtml(p.title)}</h1>${host}
<p>${escapeHtml(p.message)}</p><footer>Erugo Cloud Connect &middot; request ${escapeHtml(details.requestId)}</footer></main></body></html>
`
}

/** Headers that go with every edge page. */
export function pageHeaders (body: string, requestId: string): Record<string, string> {
  return {
    'content-type': 'text/html; charset=utf-8',
    'content-length': String(Buffer.byteLength(body)),
    'cache-control': 'no-store',
    'x-content-type-options': 'nosniff',
    'x-request-id': requestId,
  }
}
