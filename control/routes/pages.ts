/**
 * Spec "Stripe Redirect Pages": GET /billing/success and /billing/cancel, the small HTML pages
 * Checkout returns to. They only tell the user what happened; the Erugo container learns the
 * outcome by polling /v1/billing/subscription. Static text, no script, nothing from the query.
 */
import type { Plugin, ResponseToolkit } from '@hapi/hapi'
import type { Services } from '../services/index.ts'

export const SUCCESS_MESSAGE = 'Payment successful! You can close this tab and return to your Erugo admin panel.'
export const CANCEL_MESSAGE = 'Payment cancelled. You can close this tab and try again from your Erugo admin panel.'

function page (title: string, message: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title} - Erugo Cloud</title>
<style>body{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;line-height:1.5;color:#222}h1{font-size:1.4rem}</style>
</head>
<body>
<h1>${title}</h1>
<p>${message}</p>
</body>
</html>
`
}

const SUCCESS_PAGE = page('Payment successful', SUCCESS_MESSAGE)
const CANCEL_PAGE = page('Payment cancelled', CANCEL_MESSAGE)

function html (h: ResponseToolkit, body: string): ReturnType<ResponseToolkit['response']> {
  return h.response(body)
    .type('text/html; charset=utf-8')
    .header('content-security-policy', "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
    .header('cache-control', 'no-store')
}

export const pageRoutes: Plugin<Services> = {
  name: 'cc-routes-pages',
  register (server) {
    server.route({
      method: 'GET',
      path: '/billing/success',
      options: { auth: false, description: 'Shown after a completed Stripe Checkout', tags: ['pages'] },
      handler: (_request, h) => html(h, SUCCESS_PAGE),
    })
    server.route({
      method: 'GET',
      path: '/billing/cancel',
      options: { auth: false, description: 'Shown after a cancelled Stripe Checkout', tags: ['pages'] },
      handler: (_request, h) => html(h, CANCEL_PAGE),
    })
  },
}
