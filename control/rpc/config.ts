/**
 * Settings of the internal RPC listener that gateways call, from the environment (validated once;
 * a bad value raises ConfigError naming the variable, like control/config.ts).
 *
 *   CC_RPC_HOST         bind address (default 127.0.0.1: expose it deliberately; `::` or `[::]` for
 *                       every address, IPv4 and IPv6)
 *   CC_RPC_PORT         port (default 8081; 0 = any free port)
 *   CC_GATEWAY_SECRET   shared secret, base64url >= 43 chars; unset: generated into CC_DATA_DIR
 *   CC_RPC_WAIT         seconds a config long-poll waits for a change (default 30)
 *   CC_REPORT_INTERVAL  seconds between gateway reports (default 5)
 *   CC_CERT_STORE_KEY   key encrypting stored certificate private keys, base64url of 32 bytes;
 *                       unset: generated into CC_DATA_DIR (services/cert-store.ts)
 */
import Joi from 'joi'
import { BRACKETED_IPV6 } from '../../proto/net/address.ts'
import { describeEnv, loadEnv } from '../../proto/config-env.ts'
import { CERT_STORE_KEY_PATTERN } from '../services/cert-store.ts'
import { GATEWAY_SECRET_PATTERN } from './secret.ts'

export interface RpcConfig {
  host: string
  port: number
  /** Unset: generated into the data dir (secret.ts). */
  secret: string | undefined
  waitMs: number
  reportIntervalMs: number
  /** Unset: generated into the data dir (services/cert-store.ts). */
  certStoreKey: string | undefined
}

const VARIABLES = {
  CC_RPC_HOST: Joi.string().replace(BRACKETED_IPV6, '$1').hostname().default('127.0.0.1'),
  CC_RPC_PORT: Joi.number().integer().min(0).max(65535).default(8081),
  CC_GATEWAY_SECRET: Joi.string().pattern(GATEWAY_SECRET_PATTERN).message('must be base64url of at least 32 bytes (43+ characters of A-Z a-z 0-9 - _)'),
  // At most 60 s: gateways give a long-poll 90 s before they count control as unreachable.
  CC_RPC_WAIT: Joi.number().min(0.05).max(60).default(30),
  CC_REPORT_INTERVAL: Joi.number().min(0.1).max(3600).default(5),
  CC_CERT_STORE_KEY: Joi.string().pattern(CERT_STORE_KEY_PATTERN).message('must be base64url of exactly 32 bytes (43 characters of A-Z a-z 0-9 - _)'),
} as const

/** Values never echoed in an error. */
const SECRET_VARIABLES = new Set(['CC_GATEWAY_SECRET', 'CC_CERT_STORE_KEY'])

export function describeRpcVariables (): string {
  return describeEnv(VARIABLES).join('\n')
}

export function loadRpcConfig (env: NodeJS.ProcessEnv = process.env): RpcConfig {
  const v = loadEnv(VARIABLES, env, { secret: SECRET_VARIABLES })
  return {
    host: v.CC_RPC_HOST as string,
    port: v.CC_RPC_PORT as number,
    secret: v.CC_GATEWAY_SECRET as string | undefined,
    waitMs: Math.round((v.CC_RPC_WAIT as number) * 1000),
    reportIntervalMs: Math.round((v.CC_REPORT_INTERVAL as number) * 1000),
    certStoreKey: v.CC_CERT_STORE_KEY as string | undefined,
  }
}
