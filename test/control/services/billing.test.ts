/** Billing pure parts: entitlement and status mapping (services/entitlements.ts), the return URL allow-list (services/return-urls.ts); billing configuration. */
import t from 'tap'
import { ConfigError, loadConfig } from '../../../control/config.ts'
import { entitlementOf, reportedStatus } from '../../../control/services/entitlements.ts'
import { isAllowedReturnUrl } from '../../../control/services/return-urls.ts'
import type { SubscriptionRow } from '../../../control/services/subscriptions.ts'

const NOW = new Date('2026-03-10T00:00:00Z')
const DAY = 86400_000
const GRACE_S = 7 * 86400

let n = 0
function row (over: Partial<SubscriptionRow>): SubscriptionRow {
  n++
  return {
    id: `sub_${n}`,
    user_id: 'usr_x',
    customer_id: 'cus_x',
    status: 'active',
    plan: 'pro',
    price_id: 'price_pro',
    current_period_start: new Date(NOW.getTime() - 5 * DAY),
    current_period_end: new Date(NOW.getTime() + 25 * DAY),
    cancel_at_period_end: false,
    canceled_at: null,
    ended_at: null,
    payment_method_id: null,
    payment_method_brand: null,
    payment_method_last4: null,
    version_ended: false,
    version_created: 1000 + n,
    version_rank: 2,
    version_event: `evt_${n}`,
    ...over,
  }
}

t.test('entitlement', async t => {
  const plan = (rows: SubscriptionRow[], now = NOW): { plan: string, status: string } => {
    const e = entitlementOf(rows, now, GRACE_S)
    return { plan: e.plan, status: e.status }
  }
  t.same(plan([]), { plan: 'free', status: 'none' }, 'never subscribed')
  t.same(plan([row({ status: 'active' })]), { plan: 'pro', status: 'active' })
  t.same(plan([row({ status: 'trialing', plan: 'business' })]), { plan: 'business', status: 'trialing' })
  t.same(plan([row({ status: 'incomplete' })]), { plan: 'free', status: 'incomplete' }, 'not paid yet')
  t.same(plan([row({ status: 'canceled' })]), { plan: 'free', status: 'canceled' })
  t.same(plan([row({ status: 'incomplete_expired' })]), { plan: 'free', status: 'canceled' }, 'mapped to the contract\'s vocabulary')
  t.same(plan([row({ status: 'unpaid' })]), { plan: 'free', status: 'unpaid' })
  t.same(plan([row({ status: 'paused' })]), { plan: 'free', status: 'unpaid' })
  t.same(plan([row({ status: 'active', plan: null })]), { plan: 'free', status: 'active' }, 'a price we do not sell grants nothing')

  const start = new Date(NOW.getTime() - 5 * DAY)
  const pastDue = row({ status: 'past_due', current_period_start: start })
  t.same(plan([pastDue]), { plan: 'pro', status: 'past_due' }, 'past_due inside the grace period keeps the plan')
  t.same(plan([pastDue], new Date(start.getTime() + GRACE_S * 1000 - 1)), { plan: 'pro', status: 'past_due' }, 'last millisecond of grace')
  t.same(plan([pastDue], new Date(start.getTime() + GRACE_S * 1000)), { plan: 'free', status: 'past_due' }, 'grace counted from the unpaid period\'s start')
  t.same(entitlementOf([pastDue], NOW, 0).plan, 'free', 'no grace configured: Free at once')

  const old = row({ status: 'canceled', plan: 'business', version_created: 1 })
  const current = row({ status: 'active', plan: 'pro', version_created: 5 })
  t.same(plan([old, current]), { plan: 'pro', status: 'active' }, 'an ended subscription does not hide a live one')
  t.same(plan([row({ plan: 'pro' }), row({ plan: 'business' })]), { plan: 'business', status: 'active' }, 'two live subscriptions: the better plan')
  t.same(plan([row({ status: 'canceled', version_created: 9 }), row({ status: 'incomplete', version_created: 3 })]), { plan: 'free', status: 'canceled' }, 'none entitles: the latest one is reported')
  t.equal(entitlementOf([current], NOW, GRACE_S).row?.id, current.id, 'the answering row is returned')
})

t.test('reportedStatus', async t => {
  for (const s of ['active', 'trialing', 'past_due', 'canceled', 'incomplete', 'unpaid']) t.equal(reportedStatus(s), s)
  t.equal(reportedStatus('incomplete_expired'), 'canceled')
  t.equal(reportedStatus('something_new'), 'unpaid')
})

t.test('portal return URL allow-list', async t => {
  const allowed = ['https://dashboard.example.test/settings', 'https://admin.example.test/']
  const yes = ['https://dashboard.example.test/settings', 'https://dashboard.example.test/settings/', 'https://dashboard.example.test/settings/a?b=c#d', 'https://admin.example.test/', 'https://admin.example.test/anything']
  const no = [
    'https://dashboard.example.test/settingsevil', 'https://dashboard.example.test/', 'http://dashboard.example.test/settings',
    'https://dashboard.example.test.evil.test/settings', 'https://evil.test/?https://dashboard.example.test/settings',
    'https://user:pw@dashboard.example.test/settings', 'https://dashboard.example.test:444/settings', '//dashboard.example.test/settings',
    'javascript:alert(1)', 'data:text/html,x', '',
  ]
  for (const url of yes) t.ok(isAllowedReturnUrl(url, allowed), `allowed: ${url}`)
  for (const url of no) t.notOk(isAllowedReturnUrl(url, allowed), `refused: ${url}`)
})

t.test('configuration: all of Stripe or none', async t => {
  const base = { CC_LOG_LEVEL: 'silent' }
  const off = loadConfig(base)
  t.equal(off.billing.stripe, undefined, 'no keys: billing off')
  t.same(off.billing.portalReturnUrls, ['http://localhost:3000'], 'default allow-list: the public URL')
  const full = {
    CC_STRIPE_SECRET_KEY: 'sk_test_abc123',
    CC_STRIPE_WEBHOOK_SECRET: 'whsec_abc123',
    CC_STRIPE_PRICE_PRO: 'price_pro1',
    CC_STRIPE_PRICE_BUSINESS: 'price_biz1',
  }
  const on = loadConfig({ ...base, ...full, CC_STRIPE_API_BASE: 'http://127.0.0.1:12111/' })
  t.same(on.billing.stripe, { secretKey: 'sk_test_abc123', webhookSecret: 'whsec_abc123', prices: { pro: 'price_pro1', business: 'price_biz1' }, apiBase: 'http://127.0.0.1:12111' })
  t.equal(on.billing.webhookToleranceSeconds, 300)
  t.equal(on.billing.pastDueGraceSeconds, 7 * 86400)
  for (const missing of Object.keys(full)) {
    const env: Record<string, string> = { ...base, ...full }
    delete env[missing]
    t.throws(() => loadConfig(env), new ConfigError(missing, `required when ${Object.keys(full).filter(k => k !== missing).join(', ')} are set (billing needs all of ${Object.keys(full).join(', ')})`), `without ${missing}`)
  }
  t.throws(() => loadConfig({ ...base, ...full, CC_STRIPE_SECRET_KEY: 'pk_live_x' }), /CC_STRIPE_SECRET_KEY: must be a Stripe secret key/)
  t.throws(() => loadConfig({ ...base, ...full, CC_STRIPE_PRICE_PRO: 'pro' }), /CC_STRIPE_PRICE_PRO: must be a Stripe price id/)
  t.throws(() => loadConfig({ ...base, CC_BILLING_PORTAL_RETURN_URLS: 'https://ok.test/, ftp://x' }), /CC_BILLING_PORTAL_RETURN_URLS/)
  t.throws(() => loadConfig({ ...base, CC_DNS_RESOLVERS: '127.0.0.1:53, dns.google' }), /CC_DNS_RESOLVERS/)
  t.throws(() => loadConfig({ ...base, CC_DNS_GATEWAY_ADDRESSES: '203.0.113.1, gateway.example' }), /CC_DNS_GATEWAY_ADDRESSES/)
  const dns = loadConfig({ ...base, CC_DNS_RESOLVERS: '127.0.0.1:5353, ::1, [::1]:53', CC_DNS_GATEWAY_ADDRESSES: '203.0.113.1, 2001:DB8::1' }).dns
  t.same(dns.resolvers, ['127.0.0.1:5353', '::1', '[::1]:53'])
  t.same(dns.gatewayAddresses, ['203.0.113.1', '2001:db8::1'])
})
