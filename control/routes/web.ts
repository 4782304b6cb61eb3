/**
 * The dashboard (spec "User Authentication — for web dashboard"): static files from control/web,
 * no build step. Every page path answers the one shell (index.html), which routes in the browser
 * with the History API; /assets/* serves only the files present under control/web/assets when the
 * server starts (a fixed table, so no request path ever reaches the file system: no traversal).
 * Every response of this plugin, errors included, carries the strict security headers.
 */
import type { Plugin, Request, ResponseToolkit } from '@hapi/hapi'
import Boom from '@hapi/boom'
import { readdirSync, statSync } from 'node:fs'
import { join, relative, sep } from 'node:path'
import { fileURLToPath } from 'node:url'
import { apiError } from '../errors.ts'
import type { Services } from '../services/index.ts'

export const WEB_DIR = fileURLToPath(new URL('../web/', import.meta.url))
const ASSETS_DIR = join(WEB_DIR, 'assets')
const SHELL = join(WEB_DIR, 'index.html')

/** The dashboard's page paths (history-API routes); each answers the shell. */
export const PAGE_PATHS = [
  '/', '/sign-up', '/check-email', '/verify-email', '/sign-in', '/forgot-password', '/reset-password',
  '/instances', '/instances/new', '/instances/{instance_id}', '/billing', '/billing/success', '/billing/cancel',
  '/account', '/admin',
] as const

/** No inline script or style, nothing from another origin, never framed. */
export const CONTENT_SECURITY_POLICY = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

export const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  'content-security-policy': CONTENT_SECURITY_POLICY,
  'referrer-policy': 'no-referrer',
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
}

/** Bounds on the walk of the assets folder (it holds a handful of files). */
const MAX_ASSETS = 200
const MAX_DEPTH = 4

/** `relative/path` (with '/') -> absolute file, for every regular file under control/web/assets. */
export function listAssets (dir = ASSETS_DIR): Map<string, string> {
  const files = new Map<string, string>()
  const walk = (current: string, depth: number): void => {
    if (depth > MAX_DEPTH) return
    for (const entry of readdirSync(current, { withFileTypes: true })) {
      if (entry.name.startsWith('.')) continue
      const full = join(current, entry.name)
      if (entry.isDirectory()) walk(full, depth + 1)
      else if (entry.isFile() && files.size < MAX_ASSETS) files.set(relative(dir, full).split(sep).join('/'), full)
    }
  }
  walk(dir, 0)
  return files
}

function withSecurityHeaders (request: Request, h: ResponseToolkit): symbol {
  const response = request.response
  if (Boom.isBoom(response)) {
    Object.assign(response.output.headers, SECURITY_HEADERS)
    return h.continue
  }
  for (const [name, value] of Object.entries(SECURITY_HEADERS)) response.header(name, value)
  return h.continue
}

export const webRoutes: Plugin<Services> = {
  name: 'cc-routes-web',
  dependencies: ['@hapi/inert'],
  register (server) {
    if (!statSync(SHELL).isFile()) throw new Error(`dashboard shell missing: ${SHELL}`)
    const assets = listAssets()
    // Runs after the errors plugin has shaped a failure, so its fresh response gets the headers too.
    server.ext('onPreResponse', withSecurityHeaders, { sandbox: 'plugin', after: ['cc-errors'] })
    // A browser opening a mistyped dashboard address gets the shell (which says "Page not found"
    // in words) with a 404, not the API's JSON; API clients and /v1 keep the JSON error.
    server.ext('onPreResponse', (request, h) => {
      const response = request.response
      if (!Boom.isBoom(response) || response.output.statusCode !== 404 || (request.route.method as string) !== '_special') return h.continue
      if (request.method !== 'get' || request.path === '/v1' || request.path.startsWith('/v1/') || request.path.startsWith('/assets/')) return h.continue
      const accept = request.headers.accept
      if (typeof accept !== 'string' || !/\btext\/html\b/i.test(accept)) return h.continue
      const page = h.file(SHELL, { confine: WEB_DIR, etagMethod: false }).type('text/html; charset=utf-8').header('cache-control', 'no-store').code(404)
      for (const [name, value] of Object.entries(SECURITY_HEADERS)) page.header(name, value)
      return page
    }, { before: ['cc-errors'] })

    for (const path of PAGE_PATHS) {
      server.route({
        method: 'GET',
        path,
        options: { auth: false, app: { rateLimit: 'static' }, description: 'Dashboard page (the shell; the browser renders the page)', tags: ['web'], plugins: { openapi: { hidden: true } } },
        handler: (_request, h) => h.file(SHELL, { confine: WEB_DIR, etagMethod: false })
          .type('text/html; charset=utf-8')
          .header('cache-control', 'no-store'),
      })
    }

    server.route({
      method: 'GET',
      path: '/assets/{file*}',
      options: { auth: false, app: { rateLimit: 'static' }, description: 'Dashboard scripts and styles', tags: ['web'], plugins: { openapi: { hidden: true } } },
      handler (request, h) {
        const file = assets.get(request.params.file as string)
        if (file === undefined) throw apiError('NOT_FOUND', 'Resource not found')
        return h.file(file, { confine: ASSETS_DIR })
      },
    })
  },
}
