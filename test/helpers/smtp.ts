/** A local SMTP server (smtp-server on 127.0.0.1) that keeps every message it accepts. */
import type { Test } from 'tap'
import { SMTPServer } from 'smtp-server'

export interface CapturedMail { from: string, to: string[], raw: string }

/** RFC 2045 6.7 quoted-printable: soft line breaks and =XX escapes. */
export function decodeQuotedPrintable (text: string): string {
  return Buffer.from(text.replace(/=\r?\n/g, '').replace(/=([0-9A-F]{2})/g, (_, hex: string) => String.fromCharCode(parseInt(hex, 16))), 'latin1').toString('utf8')
}

/** Starts the server; the teardown closes it. `messages` fills as mail arrives. */
export async function startSmtp (t: Test): Promise<{ port: number, url: string, messages: CapturedMail[] }> {
  const messages: CapturedMail[] = []
  const server = new SMTPServer({
    disabledCommands: ['STARTTLS', 'AUTH'],
    logger: false,
    onData (stream, session, callback) {
      const chunks: Buffer[] = []
      stream.on('data', (c: Buffer) => chunks.push(c))
      stream.on('end', () => {
        messages.push({ from: session.envelope.mailFrom === false ? '' : session.envelope.mailFrom.address, to: session.envelope.rcptTo.map(r => r.address), raw: Buffer.concat(chunks).toString('latin1') })
        callback()
      })
    },
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>(resolve => server.close(() => resolve())))
  const port = (server.server.address() as { port: number }).port
  return { port, url: `smtp://127.0.0.1:${port}`, messages }
}
