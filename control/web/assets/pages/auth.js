// Signed-out pages: sign up, check your email, verify, sign in, forgot and reset password.
import { api, ApiError, signIn } from '../api.js'
import { clear, h } from '../dom.js'
import { alertRegion, createForm, describeError, showAlert } from '../forms.js'
import { session } from '../session.js'

const PASSWORD_HINT = 'At least 8 characters.'

export function signUp ({ main, navigate }) {
  const form = createForm({
    fields: [
      { name: 'name', label: 'Name', autocomplete: 'name' },
      { name: 'email', label: 'Email', type: 'email', autocomplete: 'email', spellcheck: false, autocapitalize: 'none' },
      { name: 'password', label: 'Password', type: 'password', autocomplete: 'new-password', hint: PASSWORD_HINT },
      { name: 'password_confirmation', label: 'Confirm password', type: 'password', autocomplete: 'new-password' },
      { name: 'accept_terms', label: 'I accept the terms of service', checkbox: true },
      { name: 'accept_privacy', label: 'I accept the privacy policy', checkbox: true },
      { name: 'accept_marketing', label: 'Send me product news', checkbox: true },
    ],
    submit: 'Create account',
    async onSubmit (values) {
      await api('POST', '/auth/register', values, { auth: false })
      session.signUpEmail = values.email
      navigate('/check-email')
    },
  })
  main.append(h('div', { class: 'narrow' },
    h('h1', {}, 'Create your account'),
    form.form,
    h('p', {}, 'Already have an account? ', h('a', { href: '/sign-in' }, 'Sign in'))))
}

function resendForm (email) {
  const sent = h('p', { role: 'status', class: 'status' })
  const form = createForm({
    fields: [{ name: 'email', label: 'Email', type: 'email', autocomplete: 'email', value: email ?? '', spellcheck: false, autocapitalize: 'none' }],
    submit: 'Send a new link',
    async onSubmit (values) {
      sent.textContent = ''
      const answer = await api('POST', '/auth/resend-verification', { email: values.email }, { auth: false })
      sent.textContent = `${answer?.message ?? 'If an unverified account exists, a verification email has been sent'}.`
    },
  })
  return h('div', {}, form.form, sent)
}

export function checkEmail ({ main }) {
  const email = session.signUpEmail
  main.append(h('div', { class: 'narrow' },
    h('h1', {}, 'Check your email'),
    h('p', {}, email ? `We sent a link to ${email}. Open it to confirm your address, then sign in.` : 'We sent you a link. Open it to confirm your address, then sign in.'),
    h('p', { class: 'muted' }, 'No mail after a few minutes? Look in your spam folder, or ask for a new link.'),
    resendForm(email),
    h('p', {}, h('a', { href: '/sign-in' }, 'Sign in'))))
}

const LINK_PROBLEMS = {
  LINK_EXPIRED: 'This link has expired',
  LINK_ALREADY_USED: 'This link was already used',
  LINK_INVALID: 'This link is not valid',
}

export async function verifyEmail ({ main, signal }) {
  const token = session.mailToken
  session.mailToken = null
  const box = h('div', { class: 'narrow' })
  main.append(box)
  const failed = (title, detail) => {
    clear(box).append(
      h('h1', {}, title),
      h('p', {}, detail ?? 'Ask for a new verification link: enter your email and we send a fresh one.'),
      resendForm(null))
  }
  if (!token) {
    failed('This link is not valid', 'The link has no token. Open the link from the email again, or ask for a new one.')
    return
  }
  box.append(h('h1', {}, 'Verifying your email'), h('p', { role: 'status' }, 'One moment…'))
  try {
    await api('POST', '/auth/verify-email', { token }, { auth: false })
    if (signal.aborted) return
    clear(box).append(h('h1', {}, 'Email verified'), h('p', {}, 'Your address is confirmed. You can now create instances.'), h('p', {}, h('a', { href: '/sign-in', class: 'btn btn-primary' }, 'Sign in')))
  } catch (err) {
    if (signal.aborted) return
    if (err instanceof ApiError && err.code in LINK_PROBLEMS) {
      failed(LINK_PROBLEMS[err.code], err.code === 'LINK_ALREADY_USED' ? 'Your address may be verified already: try to sign in. Otherwise ask for a new link.' : undefined)
      if (err.code === 'LINK_ALREADY_USED') box.append(h('p', {}, h('a', { href: '/sign-in' }, 'Sign in')))
    } else if (err instanceof ApiError && err.code === 'VALIDATION_ERROR') failed(LINK_PROBLEMS.LINK_INVALID)
    else {
      failed('This link is not valid', '')
      const alert = alertRegion()
      box.insertBefore(alert, box.children[1])
      showAlert(alert, describeError(err))
    }
  }
}

export function signInPage ({ main, navigate, loadUser }) {
  const form = createForm({
    fields: [
      { name: 'email', label: 'Email', type: 'email', autocomplete: 'username', spellcheck: false, autocapitalize: 'none' },
      { name: 'password', label: 'Password', type: 'password', autocomplete: 'current-password' },
    ],
    submit: 'Sign in',
    describe: { signIn: true },
    async onSubmit (values) {
      await signIn(values.email, values.password)
      try { await loadUser() } catch { session.user = null }
      navigate('/instances')
    },
  })
  main.append(h('div', { class: 'narrow' },
    h('h1', {}, 'Sign in'),
    form.form,
    h('p', {}, h('a', { href: '/forgot-password' }, 'Forgot your password?')),
    h('p', {}, 'New to Erugo Cloud? ', h('a', { href: '/sign-up' }, 'Create an account'))))
}

export function forgotPassword ({ main }) {
  const box = h('div', { class: 'narrow' })
  const form = createForm({
    fields: [{ name: 'email', label: 'Email', type: 'email', autocomplete: 'email', spellcheck: false, autocapitalize: 'none' }],
    submit: 'Send reset link',
    async onSubmit (values) {
      await api('POST', '/auth/forgot-password', { email: values.email }, { auth: false })
      form.form.replaceWith(h('p', { role: 'status', class: 'status' }, `If an account exists for ${values.email}, we have sent it a link to reset the password. Check your email; the link works once and expires after a while.`))
    },
  })
  box.append(h('h1', {}, 'Reset your password'), h('p', {}, 'Enter the email of your account and we send you a link to choose a new password.'), form.form, h('p', {}, h('a', { href: '/sign-in' }, 'Back to sign in')))
  main.append(box)
}

export function resetPassword ({ main }) {
  const token = session.mailToken
  session.mailToken = null
  const box = h('div', { class: 'narrow' })
  main.append(box)
  const badLink = () => ['This link is not valid: it may have expired or been used already. ', h('a', { href: '/forgot-password' }, 'Ask for a new reset link'), '.']
  box.append(h('h1', {}, 'Choose a new password'))
  if (!token) {
    const alert = alertRegion()
    box.append(alert)
    showAlert(alert, badLink())
    return
  }
  const form = createForm({
    fields: [
      { name: 'password', label: 'New password', type: 'password', autocomplete: 'new-password', hint: PASSWORD_HINT },
      { name: 'password_confirmation', label: 'Confirm new password', type: 'password', autocomplete: 'new-password' },
    ],
    submit: 'Set password',
    async onSubmit (values, ctx) {
      try {
        await api('POST', '/auth/reset-password', { token, ...values }, { auth: false })
      } catch (err) {
        if (err instanceof ApiError && ((err.code === 'VALIDATION_ERROR' && err.details?.fields?.token) || err.code in LINK_PROBLEMS)) {
          showAlert(ctx.alert, badLink())
          return
        }
        throw err
      }
      form.form.replaceWith(h('div', { role: 'status', class: 'status' },
        h('p', {}, 'Your password has been changed, and every device signed in to your account was signed out.'),
        h('p', {}, h('a', { href: '/sign-in', class: 'btn btn-primary' }, 'Sign in'))))
    },
  })
  box.append(form.form)
}
