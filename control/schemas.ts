/**
 * joi pieces shared by routes: request fields (validated, normalised) and response shapes (used for
 * the OpenAPI document and, when `validateResponses` is on, checked on every response in tests).
 *
 * Routes import `Joi` from here, not from 'joi': its `string()` refuses control characters (C0
 * including NUL, DEL, C1) and lone UTF-16 surrogates in every field, before trimming or any other
 * rule, as 422 VALIDATION_ERROR. Such input has no legitimate use in a name, an id, a URL or a
 * password, and it reaches the database (NUL is an error there), logs and mail. Passwords follow
 * the same rule: any printable Unicode, no control characters.
 */
import BaseJoi from 'joi'
import { ERROR_CODES } from '../proto/api/errors.ts'
import { PASSWORD_MAX_LENGTH, PASSWORD_MIN_LENGTH } from './services/passwords.ts'

/** C0 (U+0000-U+001F), DEL and C1 (U+007F-U+009F): Unicode general category Cc. */
const CONTROL_CHARACTER = /\p{Cc}/u
/** With the u flag a surrogate matches only when it is not half of a pair. */
const LONE_SURROGATE = /\p{Cs}/u

export const Joi = BaseJoi.extend((joi: BaseJoi.Root): BaseJoi.Extension => ({
  type: 'string',
  base: joi.string(),
  messages: {
    'string.control': 'must not contain control characters',
    'string.surrogate': 'must be valid Unicode text',
  },
  prepare (value: unknown, helpers) {
    if (typeof value !== 'string') return undefined
    if (CONTROL_CHARACTER.test(value)) return { value, errors: helpers.error('string.control') }
    if (LONE_SURROGATE.test(value)) return { value, errors: helpers.error('string.surrogate') }
    return undefined
  },
})) as BaseJoi.Root

// Requests.

export const email = Joi.string().trim().lowercase().email({ tlds: false, ignoreLength: false }).max(254)
/** Length in characters; never trimmed or truncated (OWASP: allow long passphrases, no truncation). */
export const password = Joi.string().min(PASSWORD_MIN_LENGTH).max(PASSWORD_MAX_LENGTH)
export const passwordConfirmation = Joi.string().valid(Joi.ref('password')).messages({ 'any.only': 'must match password' })
export const displayName = Joi.string().trim().min(1).max(100)
/** Opaque tokens from mails and JWTs: bounded so a huge value is refused cheaply. */
export const mailToken = Joi.string().max(256)
export const bearerJwt = Joi.string()

// Responses.

export const timestamp = Joi.string().isoDate().example('2025-11-29T12:00:00Z')
export const accountStatus = Joi.string().valid('pending_email_verification', 'active')
export const subscriptionPlan = Joi.string().valid('free', 'pro', 'business')
export const subscriptionStatus = Joi.string().valid('none', 'active', 'trialing', 'past_due', 'canceled', 'incomplete', 'unpaid')
export const userId = Joi.string().pattern(/^usr_[0-9A-Za-z]{22}$/).example('usr_4fQ1xY8kLm2Np7Rs9Tv3Wz')
/** The account as a login and GET /user both describe it (keys for Joi.object). */
export const userSummary = {
  id: userId.required(),
  email: Joi.string().required(),
  name: Joi.string().required(),
  subscription_status: subscriptionStatus.required(),
  subscription_plan: subscriptionPlan.required(),
  account_status: accountStatus.required(),
}
export const message = Joi.object({ message: Joi.string().required() }).label('Message')

export const errorResponse = Joi.object({
  error: Joi.object({
    code: Joi.string().valid(...ERROR_CODES).required(),
    message: Joi.string().required(),
    details: Joi.object().unknown(true).required(),
  }).required(),
}).label('Error')
