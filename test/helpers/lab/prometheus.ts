/**
 * Debian's Prometheus server inside a lab namespace: scrapes the given targets every second into a
 * TSDB in the lab's directory, and answers PromQL over its HTTP API (queried with curl from the
 * same namespace).
 *
 *   const prom = await startPrometheus(lab, ns, { job: 'cloud-connect', targets: ['127.0.0.1:9091'] })
 *   const value = await prom.scalar('cc_tunnels_active')
 */
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import type { Lab } from '../lab.ts'
import type { LabProcess } from './process.ts'

export const PROMETHEUS = '/usr/bin/prometheus'

export interface PromSeries { metric: Record<string, string>, value: [number, string] }

export interface Prometheus {
  process: LabProcess
  /** http://127.0.0.1:PORT inside the namespace. */
  url: string
  /** An instant query's vector. */
  query (expr: string): Promise<PromSeries[]>
  /** The one value of an instant query; undefined when the vector is empty. */
  scalar (expr: string): Promise<number | undefined>
}

export async function startPrometheus (lab: Lab, ns: string, scrape: { job: string, targets: string[] }, port = 9090): Promise<Prometheus> {
  const dir = join(lab.dir, `prometheus-${port}`)
  mkdirSync(join(dir, 'data'), { recursive: true })
  const config = lab.file(`prometheus-${port}.yml`, [
    'global:',
    '  scrape_interval: 1s',
    '  evaluation_interval: 1s',
    'scrape_configs:',
    `  - job_name: ${scrape.job}`,
    '    scrape_interval: 1s',
    '    scrape_timeout: 900ms',
    '    static_configs:',
    `      - targets: [${scrape.targets.map(t => `'${t}'`).join(', ')}]`,
    '',
  ].join('\n'))
  const process = lab.spawn(ns, 'prometheus', PROMETHEUS, [
    `--config.file=${config}`,
    `--storage.tsdb.path=${join(dir, 'data')}`,
    `--web.listen-address=127.0.0.1:${port}`,
    '--storage.tsdb.retention.time=1h',
  ])
  await process.waitForOutput(/Server is ready to receive web requests/, 60_000)
  const url = `http://127.0.0.1:${port}`
  const query = async (expr: string): Promise<PromSeries[]> => {
    const r = await lab.curl(ns, ['-sS', '--fail', '--max-time', '10', '-G', '--data-urlencode', `query=${expr}`, `${url}/api/v1/query`], { timeoutMs: 20_000 })
    if (r.code !== 0) throw new Error(`prometheus query ${expr}: curl exit ${r.code}: ${r.stderr.trim()}`)
    const body = JSON.parse(r.stdout) as { status: string, data: { resultType: string, result: PromSeries[] } }
    if (body.status !== 'success' || body.data.resultType !== 'vector') throw new Error(`prometheus query ${expr}: ${r.stdout.slice(0, 500)}`)
    return body.data.result
  }
  return {
    process,
    url,
    query,
    async scalar (expr) {
      const result = await query(expr)
      if (result.length > 1) throw new Error(`${expr}: ${result.length} series`)
      return result.length === 0 ? undefined : Number(result[0].value[1])
    },
  }
}
