/**
 * The lab of the kernel-mode tests (root): `cloud-connect start` in one namespace, a container
 * namespace joined to it by a veth pair, a provisioned instance, and the name of the WireGuard
 * interface the agent will create (its wireguard-go socket removed at teardown).
 */
import type { Test } from 'tap'
import { rmSync } from 'node:fs'
import { join } from 'node:path'
import { Lab } from '../helpers/lab.ts'
import { ifName } from '../helpers/lab/netns.ts'
import type { LabProcess } from '../helpers/lab/process.ts'
import { CLI, ROOT } from './service.ts'

export const API_PORT = 8080
export const WG_PORT = 51820
export const HTTPS_PORT = 8443

export interface KernelLab {
  lab: Lab
  gwNs: string
  ctNs: string
  /** The gateway side's address on the veth pair. */
  gwIp: string
  iface: string
  dataDir: string
  service: LabProcess
  /** The environment the service got, without its CC_* settings (for the agent). */
  env: NodeJS.ProcessEnv
  instance: { token: string, tunnelIp: string, hostname: string }
}

/** Starts the service (with `extraEnv`) and provisions instance `name`; resolves once it is ready. */
export async function startKernelLab (t: Test, name: string, extraEnv: NodeJS.ProcessEnv = {}): Promise<KernelLab> {
  const lab = await Lab.create(t)
  const gwNs = await lab.namespace('gw')
  const ctNs = await lab.namespace('ct')
  const { a: gwEnd } = await lab.link(gwNs, ctNs)
  const iface = ifName(lab.runId, 'k', 0)
  t.teardown(() => { rmSync(`/var/run/wireguard/${iface}.sock`, { force: true }) })

  const dataDir = join(lab.dir, 'service')
  const env: NodeJS.ProcessEnv = { ...process.env }
  for (const key of Object.keys(env)) if (key.startsWith('CC_') || key === 'DATABASE_URL' || /^(https?|no)_proxy$/i.test(key)) delete env[key]
  const service = lab.spawn(gwNs, 'start', process.execPath, [CLI, 'start'], {
    cwd: ROOT,
    env: {
      ...env,
      CC_DATA_DIR: dataDir,
      CC_API_HOST: '0.0.0.0',
      CC_API_PORT: String(API_PORT),
      CC_HTTP_PORT: '0',
      CC_HTTPS_PORT: String(HTTPS_PORT),
      CC_EDGE_HOST: '127.0.0.1',
      CC_WG_HOST: '0.0.0.0',
      CC_WG_PORT: String(WG_PORT),
      CC_GATEWAY_ENDPOINT: `${gwEnd.ip}:${WG_PORT}`,
      CC_ARGON2_MEMORY_KIB: '64',
      CC_ARGON2_TIME_COST: '1',
      CC_REPORT_INTERVAL: '0.5',
      ...extraEnv,
    },
  })
  await service.waitForOutput(/^ {2}Data /m, 120_000)
  const provisioned = await lab.exec(gwNs, process.execPath, ['--import', 'tsx', join(ROOT, 'test/agent/provision.ts'), `http://127.0.0.1:${API_PORT}/v1`, join(dataDir, 'outbox'), name], { cwd: ROOT, timeoutMs: 120_000 })
  if (provisioned.code !== 0) throw new Error(`provisioning failed: ${provisioned.stderr}`)
  const instance = JSON.parse(provisioned.stdout) as KernelLab['instance']
  return { lab, gwNs, ctNs, gwIp: gwEnd.ip, iface, dataDir, service, env, instance }
}
