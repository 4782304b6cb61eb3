/**
 * Owner alerts with real processes, on loopback: `cloud-connect start` sending mail to a local SMTP
 * server, the userspace agent in front of a local web server. The agent stops: after the (short)
 * threshold exactly one "offline" mail, however many times the alert job runs; the agent starts
 * again: exactly one "back online" mail.
 */
import t from 'tap'
import { join } from 'node:path'
import { decodeQuotedPrintable, startSmtp } from '../helpers/smtp.ts'
import { createInstance, delay, startAgent, startService, tempDir, tunnelStatus, waitUntil } from './service.ts'
import { startOrigin } from './origin.ts'

const THRESHOLD_SECONDS = 3

t.test('an agent stopped past the threshold: one offline mail; started again: one back-online mail', async t => {
  const dir = tempDir(t)
  const smtp = await startSmtp(t)
  const service = await startService(t, join(dir, 'service'), {}, {
    CC_SMTP_URL: smtp.url,
    CC_ALERT_OFFLINE_AFTER: String(THRESHOLD_SECONDS),
    CC_ALERT_INTERVAL: '1',
  })
  const texts = (): string[] => smtp.messages.map(m => decodeQuotedPrintable(m.raw))
  const instance = await createInstance(service, 'alertbox', texts)
  const subjects = (): string[] => texts().map(x => /^Subject: (.*)$/m.exec(x)?.[1] ?? '').filter(s => s.includes(instance.hostname))
  const origin = await startOrigin(t)
  const run = (): ReturnType<typeof startAgent> => startAgent(t, { api: service.api, token: instance.token, dir, target: `http://127.0.0.1:${origin.port}` })

  let agent = run()
  await agent.waitFor(/tunnel up: the gateway answers/, 90_000)
  await waitUntil('connected', async () => (await tunnelStatus(service, instance.token)) === 'connected' || undefined, 30_000)
  t.same(subjects(), [], 'no alert while connected')

  t.equal(await agent.stop(), 0, 'the agent stops (and says goodbye)')
  t.equal(await tunnelStatus(service, instance.token), 'disconnected')
  const offline = `Your Erugo Cloud instance ${instance.hostname} is offline`
  await waitUntil('the offline mail', () => subjects().includes(offline) || undefined, 30_000)
  // Several more runs of the alert job (every second) while it stays offline.
  await delay(4_000)
  t.same(subjects(), [offline], 'exactly one offline mail')
  const mail = smtp.messages.find(m => decodeQuotedPrintable(m.raw).includes(offline))!
  t.ok(mail.to.some(to => to.startsWith('agent-')), `to the owner (${mail.to.join(', ')})`)
  t.match(decodeQuotedPrintable(mail.raw), `/instances/${instance.id}`, 'with a link to the instance page')

  agent = run()
  await agent.waitFor(/tunnel up: the gateway answers/, 90_000)
  const back = `Your Erugo Cloud instance ${instance.hostname} is back online`
  await waitUntil('the back-online mail', () => subjects().includes(back) || undefined, 30_000)
  await delay(4_000)
  t.same(subjects(), [offline, back], 'then exactly one back-online mail')
  await agent.stop()
})
