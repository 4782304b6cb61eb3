/** Spec "User Authenticated Endpoints": GET and PATCH /v1/user. */
import type { Plugin } from '@hapi/hapi'
import { Joi } from '../schemas.ts'
import type { UpdateUserResponse, UserProfile } from '../../proto/api/user.ts'
import { apiError } from '../errors.ts'
import * as S from '../schemas.ts'
import type { Services } from '../services/index.ts'
import { isoSeconds } from '../time.ts'

export const userRoutes: Plugin<Services> = {
  name: 'cc-routes-user',
  register (server, services) {
    const { accounts, plans } = services

    server.route({
      method: 'GET',
      path: '/user',
      options: {
        description: 'The signed-in account',
        tags: ['user'],
        response: {
          status: {
            200: Joi.object({
              ...S.userSummary,
              created_at: S.timestamp.required(),
              role: Joi.string().valid('user', 'admin').required().description('`admin`: may read GET /v1/admin/overview'),
            }).label('UserProfile'),
          },
        },
      },
      async handler (request) {
        const user = await accounts.findById(request.auth.credentials.user!.id)
        if (user === undefined) throw apiError('UNAUTHORIZED', 'Invalid or expired token')
        const sub = await plans.subscriptionOf(user.id)
        const body: UserProfile = {
          id: user.id,
          email: user.email,
          name: user.name,
          subscription_status: sub.status,
          subscription_plan: sub.plan,
          created_at: isoSeconds(user.created_at),
          account_status: user.account_status,
          role: user.role,
        }
        return body
      },
    })

    server.route({
      method: 'PATCH',
      path: '/user',
      options: {
        description: 'Update the signed-in account',
        tags: ['user'],
        validate: { payload: Joi.object({ name: S.displayName }).min(1).label('UpdateUserRequest') },
        response: {
          status: { 200: Joi.object({ id: S.userId.required(), email: Joi.string().required(), name: Joi.string().required() }).label('UpdateUserResponse') },
        },
      },
      async handler (request) {
        const user = await accounts.updateProfile(request.auth.credentials.user!.id, request.payload as { name?: string })
        const body: UpdateUserResponse = { id: user.id, email: user.email, name: user.name }
        return body
      },
    })
  },
}
