/**
 * joi pieces shared by routes: request fields (validated, normalised) and response shapes (used for
 * the OpenAPI document and, when `validateResponses` is on, checked on every response in tests).
 */
import Joi from 'joi'
import { ERROR_CODES } from '../proto/api/errors.ts'
import { PASSWORD_MAX_LENGTH, PASSWORD_MIN_LENGTH } from './services/passwords.ts'

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
export const message = Joi.object({ message: Joi.string().required() }).label('Message')

export const errorResponse = Joi.object({
  error: Joi.object({
    code: Joi.string().valid(...ERROR_CODES).required(),
    message: Joi.string().required(),
    details: Joi.object().unknown(true).required(),
  }).required(),
}).label('Error')
