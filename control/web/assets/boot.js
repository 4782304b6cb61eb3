// A classic script that runs before the dashboard's modules: when one of them cannot be loaded
// (no network, the server refusing), the page says so instead of "Loading…" for ever. A module
// graph that fails to load fires `error` at its <script> element, which does not bubble: hence
// a capturing listener on the window.
window.addEventListener('error', event => {
  const el = event.target
  if (!(el instanceof HTMLScriptElement) || el.type !== 'module') return
  const boot = document.getElementById('boot')
  if (boot === null) return
  boot.className = 'alert alert-shown'
  boot.setAttribute('role', 'alert')
  boot.textContent = 'The dashboard could not be loaded. Check your connection and reload the page in a moment.'
}, true)
