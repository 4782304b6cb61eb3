/**
 * Outgoing mail. With an SMTP URL, nodemailer sends it; without one, each message is written to
 * `<dataDir>/outbox/` as an .eml-like text file and its links are logged, so a single-machine setup
 * works with no mail server. Sending never blocks a request: `send` queues, failures are logged,
 * and `drain()` waits for everything queued (used on shutdown and in tests).
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { createTransport, type Transporter } from 'nodemailer'
import type { Logger } from 'pino'
import { randomBase62 } from '../ids.ts'

export interface MailMessage {
  to: string
  subject: string
  text: string
  /** Links the message carries (logged in outbox mode only). */
  links: string[]
}

export interface MailTransport {
  deliver (from: string, message: MailMessage): Promise<void>
}

export class SmtpTransport implements MailTransport {
  readonly #transporter: Transporter

  constructor (url: string) {
    this.#transporter = createTransport(url)
  }

  async deliver (from: string, message: MailMessage): Promise<void> {
    await this.#transporter.sendMail({ from, to: message.to, subject: message.subject, text: message.text })
  }

  close (): void {
    this.#transporter.close()
  }
}

export class OutboxTransport implements MailTransport {
  readonly #dir: string
  readonly #logger: Logger | undefined

  constructor (dir: string, logger?: Logger) {
    this.#dir = dir
    this.#logger = logger
  }

  async deliver (from: string, message: MailMessage): Promise<void> {
    mkdirSync(this.#dir, { recursive: true, mode: 0o700 })
    const file = join(this.#dir, `${new Date().toISOString().replace(/[:.]/g, '-')}-${randomBase62(6)}.eml`)
    const text = `From: ${from}\nTo: ${message.to}\nSubject: ${message.subject}\n\n${message.text}\n`
    writeFileSync(file, text, { mode: 0o600 })
    this.#logger?.info({ file, to: message.to, subject: message.subject, links: message.links }, 'mail written to outbox')
  }
}

export class Mailer {
  readonly #from: string
  readonly #transport: MailTransport
  readonly #logger: Logger | undefined
  readonly #pending = new Set<Promise<void>>()

  constructor (from: string, transport: MailTransport, logger?: Logger) {
    this.#from = from
    this.#transport = transport
    this.#logger = logger
  }

  /** Queues a message; never throws. */
  send (message: MailMessage): void {
    const p = this.#transport.deliver(this.#from, message).catch((err: Error) => {
      this.#logger?.error({ err: err.message, to: message.to, subject: message.subject }, 'mail delivery failed')
    }).finally(() => { this.#pending.delete(p) })
    this.#pending.add(p)
  }

  async drain (): Promise<void> {
    while (this.#pending.size > 0) await Promise.all([...this.#pending])
  }
}

// Message texts. Plain text only: nothing to escape, nothing for a mail client to run. They carry
// no user-chosen string (not even the display name): an account's name is set by whoever
// registered it, who need not own the address, and text of theirs in our mail would read as ours
// ("someone tried to sign up" to any address, with a link in the name). The greeting is generic.

export function verificationMail (to: string, link: string, ttlHours: number): MailMessage {
  return {
    to,
    subject: 'Confirm your Erugo Cloud email address',
    text: `Hello,\n\nConfirm your email address to finish setting up your Erugo Cloud account:\n\n${link}\n\nThe link works once and expires in ${ttlHours} hours. If you did not sign up, ignore this message.\n`,
    links: [link],
  }
}

export function existingAccountMail (to: string, resetLink: string): MailMessage {
  return {
    to,
    subject: 'Someone tried to sign up with your email address',
    text: `Hello,\n\nSomeone tried to create an Erugo Cloud account with this email address, which already has an account. If it was you, sign in instead; if you forgot your password, reset it here:\n\n${resetLink}\n\nIf it was not you, no action is needed: nothing was changed.\n`,
    links: [resetLink],
  }
}

export function passwordResetMail (to: string, link: string, ttlMinutes: number): MailMessage {
  return {
    to,
    subject: 'Reset your Erugo Cloud password',
    text: `Hello,\n\nA password reset was requested for your Erugo Cloud account. Choose a new password here:\n\n${link}\n\nThe link works once and expires in ${ttlMinutes} minutes. If you did not ask for this, ignore this message: your password is unchanged.\n`,
    links: [link],
  }
}

export function passwordChangedMail (to: string): MailMessage {
  return {
    to,
    subject: 'Your Erugo Cloud password was changed',
    text: 'Hello,\n\nThe password of your Erugo Cloud account was just reset and every signed-in session was signed out. If this was not you, reset your password now and contact support.\n',
    links: [],
  }
}

// The alert mails name the instance by its full domain (a label we validated), not by its name.

export function instanceOfflineMail (to: string, fullDomain: string, link: string, offlineSince: Date): MailMessage {
  return {
    to,
    subject: `Your Erugo Cloud instance ${fullDomain} is offline`,
    text: `Hello,\n\nYour Erugo Cloud instance ${fullDomain} has been offline since ${offlineSince.toISOString().replace(/\.\d{3}Z$/, 'Z')}: its tunnel has not reached our gateway since then, so its address does not answer.\n\nCheck that the container is running and can reach the internet. You will get one more mail when it is back online.\n\nInstance page (alerts can be turned off there):\n${link}\n`,
    links: [link],
  }
}

export function instanceBackOnlineMail (to: string, fullDomain: string, link: string): MailMessage {
  return {
    to,
    subject: `Your Erugo Cloud instance ${fullDomain} is back online`,
    text: `Hello,\n\nYour Erugo Cloud instance ${fullDomain} is connected again and its address answers.\n\nInstance page:\n${link}\n`,
    links: [link],
  }
}
