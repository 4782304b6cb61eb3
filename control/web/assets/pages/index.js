// The page table: path pattern -> page. `auth`: signed-in only; `guestOnly`: signed-out only.
import { isSignedIn } from '../api.js'
import { account, operator } from './account.js'
import { checkEmail, forgotPassword, resetPassword, signInPage, signUp, verifyEmail } from './auth.js'
import { billing, billingCancel, billingSuccess } from './billing.js'
import { instancePage } from './instance.js'
import { instanceList, newInstance } from './instances.js'

export const routes = [
  { pattern: /^\/$/, render: ({ navigate }) => navigate(isSignedIn() ? '/instances' : '/sign-in', { replace: true }) },
  { pattern: /^\/sign-up$/, render: signUp, guestOnly: true },
  { pattern: /^\/check-email$/, render: checkEmail },
  { pattern: /^\/verify-email$/, render: verifyEmail },
  { pattern: /^\/sign-in$/, render: signInPage, guestOnly: true },
  { pattern: /^\/forgot-password$/, render: forgotPassword },
  { pattern: /^\/reset-password$/, render: resetPassword },
  { pattern: /^\/instances$/, render: instanceList, auth: true },
  { pattern: /^\/instances\/new$/, render: newInstance, auth: true },
  { pattern: /^\/instances\/([^/]+)$/, render: instancePage, auth: true },
  { pattern: /^\/billing$/, render: billing, auth: true },
  { pattern: /^\/billing\/success$/, render: billingSuccess },
  { pattern: /^\/billing\/cancel$/, render: billingCancel },
  { pattern: /^\/account$/, render: account, auth: true },
  { pattern: /^\/admin$/, render: operator, auth: true },
]
