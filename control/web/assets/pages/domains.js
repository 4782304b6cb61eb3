// Custom domains of an instance: add (the DNS records to create), verify, SSL status, remove.
import { api, ApiError } from '../api.js'
import { clear, copyButton, formatDate, h, uniqueId } from '../dom.js'
import { createForm, describeError, showAlert } from '../forms.js'
import { errorState, loading, PLAN_NAMES, subscriptionOrNull } from './common.js'

const DOMAIN_STATUS = {
  pending_verification: 'Waiting for DNS records',
  verified: 'Verified',
  suspended: 'Suspended (over your plan\'s limit, not served)',
}

const SSL_STATUS = {
  none: 'No certificate (the domain is not served yet)',
  provisioning: 'Certificate being issued',
  active: 'Active',
  failed: 'Certificate could not be issued (we keep trying)',
}

function recordsTable (domain) {
  const records = domain.verification?.records?.length ? domain.verification.records : [domain.verification].filter(Boolean)
  return h('div', { class: 'table-wrap' }, h('table', { class: 'records' },
    h('caption', {}, `DNS records for ${domain.domain}`),
    h('thead', {}, h('tr', {}, ['Type', 'Name', 'Value'].map(c => h('th', { scope: 'col' }, c)))),
    h('tbody', {}, records.map(r => h('tr', {},
      h('td', {}, r.type),
      h('td', { class: 'mono' }, r.name, ' ', copyButton('Copy', () => r.name)),
      h('td', { class: 'mono break' }, r.value, ' ', copyButton('Copy', () => r.value)))))))
}

function domainCard (instanceId, domain, reload) {
  const base = `/instances/${encodeURIComponent(instanceId)}/domains/${encodeURIComponent(domain.domain)}`
  const result = h('div', { role: 'status', class: 'status' })
  const headingId = uniqueId('domain')
  const verify = h('button', {
    type: 'button',
    class: 'btn btn-primary',
    async onclick () {
      verify.disabled = true
      clear(result).append(h('p', {}, 'Checking the DNS records…'))
      try {
        const answer = await api('POST', `${base}/verify`)
        if (answer.status === 'pending_verification') clear(result).append(h('p', { class: 'bad' }, `Not verified yet: ${answer.error}. DNS changes can take a few minutes to appear; try again shortly.`))
        else if (answer.status === 'suspended') clear(result).append(h('p', {}, 'The DNS records are right, but your plan has no room for this domain, so it is not served.'))
        else clear(result).append(h('p', { class: 'ok' }, `Verified. ${answer.ssl_status === 'active' ? 'HTTPS is active.' : 'The HTTPS certificate is being issued; the domain works in a minute or two.'}`))
        if (answer.status !== 'pending_verification') setTimeout(reload, 1500)
      } catch (err) {
        clear(result).append(h('p', { class: 'bad' }, ...(err instanceof ApiError && err.code === 'DNS_VERIFICATION_FAILED' ? [`Not verified yet: ${err.message}`] : describeError(err))))
      } finally {
        verify.disabled = false
      }
    },
  }, 'Verify')
  const remove = h('button', {
    type: 'button',
    class: 'btn btn-danger',
    async onclick () {
      remove.disabled = true
      try {
        await api('DELETE', base)
        reload()
      } catch (err) {
        clear(result).append(h('p', { class: 'bad' }, ...describeError(err)))
        remove.disabled = false
      }
    },
  }, 'Remove')
  const pending = domain.status === 'pending_verification'
  return h('article', { class: 'domain', 'aria-labelledby': headingId },
    h('h3', { id: headingId }, domain.domain),
    h('dl', { class: 'facts' },
      h('dt', {}, 'Status'), h('dd', {}, DOMAIN_STATUS[domain.status] ?? domain.status),
      h('dt', {}, 'SSL'), h('dd', {}, SSL_STATUS[domain.ssl_status] ?? domain.ssl_status),
      domain.verified_at ? [h('dt', {}, 'Verified'), h('dd', {}, formatDate(domain.verified_at))] : null,
      domain.error ? [h('dt', {}, 'Last check'), h('dd', {}, domain.error)] : null),
    pending ? h('p', {}, domain.verification?.instructions ?? 'Create these records at your DNS provider, then press Verify.') : h('p', { class: 'muted' }, 'Keep these DNS records in place:'),
    recordsTable(domain),
    h('div', { class: 'actions' }, verify, remove),
    result)
}

export function domainsSection ({ instanceId, signal }) {
  const path = `/instances/${encodeURIComponent(instanceId)}/domains`
  const list = h('div', {}, loading('Loading custom domains…'))
  const room = h('p', { class: 'muted' })
  // The plan's per-instance limit from the API (once); the count from this instance's list.
  const plan = subscriptionOrNull()
  const drawRoom = async count => {
    const sub = await plan
    if (sub === null || signal.aborted) return
    const allowed = sub.limits.custom_domains_per_instance
    const name = PLAN_NAMES[sub.plan] ?? sub.plan
    clear(room)
    if (allowed === 0) room.append(`Your ${name} plan has no custom domains: they come with a paid plan, on the `, h('a', { href: '/billing' }, 'Billing'), ' page.')
    else room.append(`${count} of ${allowed} custom domain${allowed === 1 ? '' : 's'} on this instance (${name} plan).`)
  }
  const load = async () => {
    try {
      const { domains } = await api('GET', path)
      if (signal.aborted) return
      drawRoom(domains.length)
      clear(list)
      if (domains.length === 0) list.append(h('p', { class: 'muted' }, 'No custom domains yet. Add one to serve this instance on your own address.'))
      for (const domain of domains) list.append(domainCard(instanceId, domain, load))
    } catch (err) {
      if (!signal.aborted) clear(list).append(errorState(err, load))
    }
  }
  const add = createForm({
    fields: [{ name: 'domain', label: 'Domain', hint: 'For example files.example.com.', spellcheck: false, autocapitalize: 'none', autocomplete: 'off', inputmode: 'url' }],
    submit: 'Add domain',
    className: 'stack inline-form',
    async onSubmit (values, ctx) {
      const answer = await api('POST', path, { domain: values.domain.trim() })
      ctx.inputs.domain.value = ''
      showAlert(ctx.alert, null)
      await load()
      const added = [...list.querySelectorAll('h3')].find(el => el.textContent === answer.domain)
      added?.scrollIntoView({ block: 'nearest' })
    },
  })
  load()
  return h('section', { class: 'card' },
    h('h2', {}, 'Custom domains'),
    room,
    add.form,
    list)
}
