// The dashboard's entry: reads a one-time mail token and drops it from the address bar before
// anything else runs, restores the session from the refresh cookie, then routes with the History API.
import { api, isSignedIn, refresh, setSignedOutHandler, signOut } from './api.js'
import { clear, h } from './dom.js'
import { routes } from './pages/index.js'
import { session } from './session.js'

const TOKEN_PAGES = new Set(['/verify-email', '/reset-password'])
if (TOKEN_PAGES.has(location.pathname)) {
  const query = new URLSearchParams(location.search)
  session.mailToken = query.get('token')
  history.replaceState(null, '', location.pathname)
}

const main = document.getElementById('main')
const navSlot = document.getElementById('nav')
let current = null

export function navigate (path, { replace = false } = {}) {
  if (replace) history.replaceState(null, '', path)
  else history.pushState(null, '', path)
  render()
}
session.navigate = navigate

function renderNav () {
  clear(navSlot)
  if (!isSignedIn()) return
  const here = location.pathname
  const link = (href, text) => h('li', {}, h('a', { href, 'aria-current': here === href || here.startsWith(`${href}/`) ? 'page' : null }, text))
  navSlot.append(h('nav', { 'aria-label': 'Main', class: 'main-nav' },
    h('ul', {},
      link('/instances', 'Instances'),
      link('/billing', 'Billing'),
      link('/account', 'Account'),
      session.user?.role === 'admin' ? link('/admin', 'Operator') : null,
      h('li', {}, h('button', { type: 'button', class: 'btn btn-link', onclick: signOutHere }, 'Sign out')))))
}

async function signOutHere () {
  await signOut()
  session.user = null
  navigate('/sign-in')
}

export async function loadUser () {
  session.user = await api('GET', '/user')
  return session.user
}

function match (path) {
  for (const route of routes) {
    const found = route.pattern.exec(path)
    if (found) return { route, params: found.slice(1).map(decodeURIComponent) }
  }
  return null
}

async function render () {
  current?.abort()
  const controller = new AbortController()
  current = controller
  const path = location.pathname.replace(/\/+$/, '') || '/'
  const found = match(path)
  if (found === null) {
    renderPage(controller, { title: 'Page not found', render: ({ main }) => main.append(h('h1', {}, 'Page not found'), h('p', {}, h('a', { href: '/' }, 'Go to the start page'))) }, [])
    return
  }
  const { route, params } = found
  if (route.auth && !isSignedIn()) {
    navigate('/sign-in', { replace: true })
    return
  }
  if (route.guestOnly && isSignedIn()) {
    navigate('/instances', { replace: true })
    return
  }
  if (isSignedIn() && session.user === null) {
    try { await loadUser() } catch { /* shown by the page's own calls */ }
    if (controller.signal.aborted) return
  }
  renderPage(controller, route, params)
}

function renderPage (controller, route, params) {
  renderNav()
  clear(main)
  const ctx = { main, params, signal: controller.signal, navigate, loadUser }
  const focusHeading = ({ unlessMoved = false } = {}) => {
    const heading = main.querySelector('h1')
    document.title = heading ? `${heading.textContent} - Erugo Cloud` : 'Erugo Cloud'
    // Once loaded, only if focus was lost (its element replaced): someone who started tabbing
    // while the page loaded keeps their place.
    const active = document.activeElement
    if (unlessMoved && active !== null && active !== document.body) return
    if (heading && session.focusOnRender) {
      heading.tabIndex = -1
      heading.focus({ preventScroll: true })
    }
  }
  Promise.resolve(route.render(ctx)).catch(err => {
    if (controller.signal.aborted) return
    main.append(h('p', { role: 'alert', class: 'alert alert-shown' }, `This page could not be shown: ${err?.message ?? err}`))
  }).finally(() => {
    if (!controller.signal.aborted) focusHeading({ unlessMoved: true })
  })
  // The heading exists synchronously on every page; set the title and focus right away too.
  focusHeading()
  session.focusOnRender = true
}

document.addEventListener('click', event => {
  if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return
  const link = event.target instanceof Element ? event.target.closest('a[href]') : null
  if (!link || link.target || link.hasAttribute('download')) return
  const url = new URL(link.href, location.href)
  if (url.origin !== location.origin || url.pathname.startsWith('/v1/') || url.pathname.startsWith('/assets/')) return
  event.preventDefault()
  if (url.pathname + url.search !== location.pathname + location.search) navigate(url.pathname + url.search)
})
window.addEventListener('popstate', () => render())

setSignedOutHandler(() => {
  session.user = null
  if (!['/sign-in', '/sign-up'].includes(location.pathname)) navigate('/sign-in', { replace: true })
})

session.focusOnRender = false
await refresh()
if (isSignedIn()) {
  try { await loadUser() } catch { /* the first page's calls report it */ }
}
document.getElementById('boot')?.remove()
render()
