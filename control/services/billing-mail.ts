/** The mail billing sends: a failed payment. */
import { isoSeconds } from '../time.ts'
import type { MailMessage } from './mail.ts'

/** No display name in it: see the note on message texts in mail.ts. */
export function paymentFailedMail (to: string, plan: string, nextAttempt: Date | null): MailMessage {
  const retry = nextAttempt === null ? '' : ` We will try again on ${isoSeconds(nextAttempt).slice(0, 10)}.`
  return {
    to,
    subject: 'Your Erugo Cloud payment failed',
    text: `Hello,\n\nThe latest payment for your Erugo Cloud ${plan} plan did not go through.${retry} Update your payment method from the Cloud Connect settings of your Erugo admin panel (Manage billing) to keep your plan; until then it stays active for a grace period, after which your account moves to the free plan and instances or custom domains over its limits are suspended (not deleted).\n`,
    links: [],
  }
}
