/**
 * Spec "Instance Authenticated Endpoints": /v1/tunnel/* with `Authorization: Bearer <instance_token>`,
 * called by the Erugo container. Logic in services/tunnel.ts; rate-limited per instance token.
 */
import type { Plugin, Request } from '@hapi/hapi'
import { Joi } from '../schemas.ts'
import { HEARTBEAT_INTERVAL_SECONDS, REGION_NAME, type DisconnectResponse, type HeartbeatResponse, type RegisterTunnelRequest } from '../../proto/api/tunnel.ts'
import { INSTANCE_STRATEGY } from '../auth.ts'
import type { Services } from '../services/index.ts'
import type { InstanceIdentity } from '../services/tunnel.ts'
import { suspendedReason } from './instances.ts'

const ipv4Cidr = Joi.string().ip({ version: ['ipv4'], cidr: 'required' })

const tunnelPeer = {
  public_key: Joi.string().required(),
  endpoint: Joi.string().required(),
  allowed_ips: ipv4Cidr.required(),
  persistent_keepalive: Joi.number().integer().required(),
}

/** One gateway placed for the instance (proto/api/tunnel.ts TunnelFleetPeer). */
const fleetPeers = Joi.array().items(Joi.object({
  gateway_id: Joi.string().required().description('The gateway\'s CC_GATEWAY_ID'),
  role: Joi.string().valid('primary', 'backup').required(),
  region: Joi.string().allow(null).required().description('CC_GATEWAY_REGION of the gateway, null when it names none'),
  ...tunnelPeer,
  allowed_ips: ipv4Cidr.required().description('That gateway\'s own tunnel address /32: the container routes nothing else to it'),
}).label('TunnelFleetPeer'))
  .description('Every gateway placed for the instance, primary first, then the backup: keep a WireGuard peer (wg-quick: one [Peer]) for each. Absent when control knows no fleet (configured gateway only)')
const status = Joi.string().valid('pending', 'connected', 'disconnected', 'suspended')

function identity (request: Request): InstanceIdentity {
  const app = request.auth.credentials.app!
  return { instanceId: app.instanceId, userId: app.userId, jti: app.jti }
}

export const tunnelRoutes: Plugin<Services> = {
  name: 'cc-routes-tunnel',
  register (server, services) {
    const { tunnel } = services
    const common = { auth: INSTANCE_STRATEGY, tags: ['tunnel'] }

    server.route({
      method: 'POST',
      path: '/tunnel/register',
      options: {
        ...common,
        description: 'Register (or replace) the instance\'s WireGuard public key and get the tunnel configuration',
        notes: 'peer.allowed_ips is the gateway\'s own /32: the container routes nothing else into the tunnel. peer is the primary gateway; peers lists every gateway placed for the instance (primary, then backup), each with its own address in allowed_ips, while the container keeps its one tunnel address on all of them.',
        plugins: { openapi: { errors: ['KEY_IN_USE'] } },
        validate: {
          payload: Joi.object({
            public_key: Joi.string().max(64).required(),
            region: Joi.string().pattern(REGION_NAME).allow(null).messages({ 'string.pattern.base': '"region" must be lower-case letters, digits and . _ - (at most 64)' })
              .description('Where the container runs (the agent\'s CC_AGENT_REGION): placement prefers gateways of this region. Omitted or null: no preference.'),
          }).label('RegisterTunnelRequest'),
        },
        response: {
          status: {
            200: Joi.object({
              status: Joi.string().valid('registered').required(),
              tunnel_config: Joi.object({
                interface: Joi.object({ address: ipv4Cidr.required() }).required(),
                peer: Joi.object(tunnelPeer).required().description('The primary gateway (peers[0] without the fleet fields)'),
                peers: fleetPeers,
              }).required(),
              domains: Joi.object({
                subdomain: Joi.string().hostname().required(),
                custom_domains: Joi.array().items(Joi.string()).required(),
              }).required(),
            }).label('RegisterTunnelResponse'),
          },
        },
      },
      async handler (request) {
        const payload = request.payload as RegisterTunnelRequest
        return await tunnel.register(identity(request), payload.public_key, payload.region ?? null)
      },
    })

    server.route({
      method: 'POST',
      path: '/tunnel/heartbeat',
      options: {
        ...common,
        description: 'The container is alive; call again after next_heartbeat_in seconds',
        notes: 'peers: the gateways placed for the instance now, as tunnel_config.peers of the registration. After a gateway is lost and the instance re-placed, the container adds and removes peers from here without registering again.',
        // The heartbeat's update is conditional on the token id: it is the revocation check.
        app: { instanceTokenCheck: 'handler' },
        validate: { payload: Joi.object({ timestamp: Joi.string().isoDate().max(64).required() }).label('HeartbeatRequest') },
        response: {
          status: {
            200: Joi.object({ status: Joi.string().valid('ok').required(), next_heartbeat_in: Joi.number().integer().required(), peers: fleetPeers }).label('HeartbeatResponse'),
          },
        },
      },
      async handler (request) {
        const who = identity(request)
        await tunnel.heartbeat(who)
        const body: HeartbeatResponse = { status: 'ok', next_heartbeat_in: HEARTBEAT_INTERVAL_SECONDS }
        const peers = await tunnel.placedPeers(who.instanceId)
        if (peers !== undefined) body.peers = peers
        return body
      },
    })

    server.route({
      method: 'POST',
      path: '/tunnel/disconnect',
      options: {
        ...common,
        description: 'The container is taking its tunnel down',
        response: { status: { 200: Joi.object({ status: Joi.string().valid('disconnected').required() }).label('DisconnectResponse') } },
      },
      async handler (request) {
        await tunnel.disconnect(identity(request))
        const body: DisconnectResponse = { status: 'disconnected' }
        return body
      },
    })

    server.route({
      method: 'GET',
      path: '/tunnel/status',
      options: {
        ...common,
        description: 'Tunnel and domain status as the cloud sees it',
        response: {
          status: {
            200: Joi.object({
              tunnel_status: status.required(),
              suspended_reason: suspendedReason.required(),
              domains: Joi.object({
                subdomain: Joi.object({
                  domain: Joi.string().hostname().required(),
                  status: Joi.string().valid('active', 'pending', 'suspended').required()
                    .description('active: routed by gateways; pending: no key registered (also right after a token regeneration); suspended: over the plan limit'),
                }).required(),
                custom_domains: Joi.array().items(Joi.object({ domain: Joi.string().required(), status: Joi.string().required(), ssl_status: Joi.string().required() })).required(),
              }).required(),
            }).label('TunnelStatus'),
          },
        },
      },
      async handler (request) {
        return await tunnel.status(identity(request))
      },
    })
  },
}
