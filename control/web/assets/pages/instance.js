// One instance: public URL, live status, the token shown once with the container settings,
// regenerate, rename / move, delete, and its custom domains.
import { api, ApiError } from '../api.js'
import { clear, confirmDialog, copyButton, formatDate, h, timeAgo, uniqueId } from '../dom.js'
import { alertRegion, createForm, describeError, showAlert } from '../forms.js'
import { session } from '../session.js'
import { errorState, isNotFound, loading, poll, publicUrl, statusBadge } from './common.js'
import { domainsSection } from './domains.js'

const STATUS_REFRESH_MS = 5000

/** The agent's settings (README "Erugo integration") with this token and this server's API URL. */
export function containerSettings (token) {
  const apiUrl = `${location.origin}/v1`
  const env = `CC_API_URL=${apiUrl}\nCC_INSTANCE_TOKEN=${token}\n`
  const compose = [
    'services:',
    '  app:',
    '    image: wardy784/erugo:latest',
    '    environment:',
    `      CC_API_URL: "${apiUrl}"`,
    `      CC_INSTANCE_TOKEN: "${token}"`,
    '    volumes:',
    '      - ./storage:/var/www/html/storage',
    '',
  ].join('\n')
  return { env, compose }
}

function tokenRegion (token, onDismiss) {
  const headingId = uniqueId('token-heading')
  const fieldId = uniqueId('token-field')
  const settings = containerSettings(token)
  const field = h('input', { id: fieldId, class: 'mono', readOnly: true, value: token, spellcheck: false, autocomplete: 'off' })
  field.addEventListener('focus', () => field.select())
  return h('section', { class: 'card card-highlight', 'aria-labelledby': headingId },
    h('h2', { id: headingId }, 'Instance token'),
    h('p', {}, 'Shown once: copy it now. If you lose it, regenerate it.'),
    h('div', { class: 'field' }, h('label', { for: fieldId }, 'Instance token'), field),
    copyButton('Copy token', () => token),
    h('h3', {}, 'Container settings'),
    h('p', {}, 'Add these lines to your Erugo container\'s docker-compose.yml, then restart it (docker compose up -d). The container connects by itself.'),
    h('pre', { class: 'code', tabIndex: 0, 'aria-label': 'docker-compose settings' }, settings.compose),
    copyButton('Copy settings', () => settings.compose),
    h('p', {}, 'Or, as environment variables (an env file):'),
    h('pre', { class: 'code', tabIndex: 0, 'aria-label': 'Environment variables' }, settings.env),
    copyButton('Copy variables', () => settings.env),
    h('p', {}, h('button', { type: 'button', class: 'btn', onclick: onDismiss }, 'I have saved the token')))
}

export async function instancePage ({ main, params, signal, navigate }) {
  const id = params[0]
  const path = `/instances/${encodeURIComponent(id)}`
  main.append(h('p', {}, h('a', { href: '/instances' }, '← Instances')))
  const page = h('div', {}, h('h1', {}, 'Instance'), loading('Loading the instance…'))
  main.append(page)

  let instance
  try {
    instance = await api('GET', path)
  } catch (err) {
    if (signal.aborted) return
    clear(page).append(h('h1', {}, isNotFound(err) ? 'Instance not found' : 'Instance'), errorState(err, isNotFound(err) ? null : () => navigate(location.pathname, { replace: true }), { notFound: 'This instance does not exist, or it was deleted.' }))
    return
  }
  if (signal.aborted) return

  const heading = h('h1', {}, instance.name)
  const urlLink = h('a', { href: publicUrl(instance.full_domain), target: '_blank', rel: 'noopener noreferrer' }, publicUrl(instance.full_domain))
  const status = h('span', {}, statusBadge(instance.status))
  const seen = h('span', {}, timeAgo(instance.last_seen))
  const suspendedNote = h('p', { class: 'note', hidden: instance.status !== 'suspended' }, 'This instance is over your plan\'s instance limit, so it is not served. ', h('a', { href: '/billing' }, 'Upgrade on the Billing page'), ' or delete another instance.')
  const tokenSlot = h('div', {})
  const pageAlert = alertRegion()

  const showToken = token => {
    clear(tokenSlot).append(tokenRegion(token, () => { session.freshTokens.delete(id); clear(tokenSlot) }))
  }
  const fresh = session.freshTokens.get(id)
  // Shown once: leaving the page forgets it.
  signal.addEventListener('abort', () => session.freshTokens.delete(id))

  clear(page).append(
    heading,
    pageAlert,
    h('dl', { class: 'facts' },
      h('dt', {}, 'Public URL'), h('dd', {}, urlLink),
      h('dt', {}, 'Status'), h('dd', {}, status),
      h('dt', {}, 'Last seen'), h('dd', {}, seen),
      h('dt', {}, 'Tunnel IP'), h('dd', { class: 'mono' }, instance.tunnel_ip),
      h('dt', {}, 'Created'), h('dd', {}, formatDate(instance.created_at))),
    suspendedNote,
    tokenSlot)
  if (fresh) showToken(fresh)

  // Regenerate.
  const regenerate = h('button', {
    type: 'button',
    class: 'btn',
    async onclick () {
      const yes = await confirmDialog({
        title: 'Regenerate the instance token?',
        body: ['The current token stops working at once: the container disconnects until you give it the new token.'],
        confirm: 'Regenerate',
        danger: true,
      })
      if (!yes) { regenerate.focus(); return }
      showAlert(pageAlert, null)
      try {
        const answer = await api('POST', `${path}/regenerate-token`)
        session.freshTokens.set(id, answer.instance_token)
        showToken(answer.instance_token)
        tokenSlot.querySelector('input')?.focus()
      } catch (err) {
        showAlert(pageAlert, describeError(err))
      }
    },
  }, 'Regenerate token')
  page.append(h('section', { class: 'card' },
    h('h2', {}, 'Connection'),
    h('p', {}, 'The instance token lets your Erugo container connect. Lost it, or think someone else has it? Make a new one.'),
    regenerate))

  // Rename / move.
  const edit = createForm({
    fields: [
      { name: 'name', label: 'Name', value: instance.name },
      { name: 'subdomain', label: 'Subdomain', value: instance.subdomain, spellcheck: false, autocapitalize: 'none', autocomplete: 'off', hint: 'Changing it changes the public URL: the old address stops working.' },
    ],
    submit: 'Save changes',
    async onSubmit (values, ctx) {
      const changes = {}
      if (values.name.trim() !== instance.name) changes.name = values.name
      if (values.subdomain.trim().toLowerCase() !== instance.subdomain) changes.subdomain = values.subdomain
      if (Object.keys(changes).length === 0) { showAlert(ctx.alert, 'Nothing to save: change the name or the subdomain first.'); return }
      try {
        const updated = await api('PATCH', path, changes)
        Object.assign(instance, updated)
        heading.textContent = updated.name
        document.title = `${updated.name} - Erugo Cloud`
        urlLink.href = publicUrl(updated.full_domain)
        urlLink.textContent = publicUrl(updated.full_domain)
        ctx.inputs.name.value = updated.name
        ctx.inputs.subdomain.value = updated.subdomain
        saved.textContent = 'Changes saved.'
      } catch (err) {
        if (err instanceof ApiError && err.code === 'SUBDOMAIN_TAKEN') {
          const suggestions = err.details.suggestions ?? []
          showAlert(ctx.alert, [`The subdomain "${err.details.subdomain ?? changes.subdomain}" is already in use.`, suggestions.length > 0 ? ' Free alternatives: ' : '',
            ...suggestions.map(s => h('button', { type: 'button', class: 'btn btn-small', onclick () { ctx.inputs.subdomain.value = s; ctx.inputs.subdomain.focus() } }, s))])
          return
        }
        throw err
      }
    },
  })
  const saved = h('p', { role: 'status', class: 'status' })
  edit.form.addEventListener('submit', () => { saved.textContent = '' }, { capture: true })
  page.append(h('section', { class: 'card' }, h('h2', {}, 'Settings'), edit.form, saved))

  // Custom domains.
  page.append(domainsSection({ instanceId: id, signal }))

  // Delete.
  const remove = h('button', {
    type: 'button',
    class: 'btn btn-danger',
    async onclick () {
      const yes = await confirmDialog({
        title: `Delete ${instance.name}?`,
        body: [`${publicUrl(instance.full_domain)} stops working at once and its custom domains are removed. The container's token stops working and its tunnel is closed. This cannot be undone.`],
        confirm: 'Delete',
        danger: true,
      })
      if (!yes) { remove.focus(); return }
      try {
        await api('DELETE', path)
        navigate('/instances')
      } catch (err) {
        showAlert(pageAlert, describeError(err))
        pageAlert.scrollIntoView({ block: 'center' })
      }
    },
  }, 'Delete instance')
  page.append(h('section', { class: 'card card-danger' }, h('h2', {}, 'Delete'), h('p', {}, 'Deleting the instance disconnects the container and frees its subdomain.'), remove))

  poll(signal, STATUS_REFRESH_MS, async () => {
    const latest = await api('GET', path)
    if (signal.aborted) return
    if (latest.status !== instance.status) clear(status).append(statusBadge(latest.status))
    instance.status = latest.status
    instance.last_seen = latest.last_seen
    seen.textContent = timeAgo(latest.last_seen)
    suspendedNote.hidden = latest.status !== 'suspended'
  })
}
