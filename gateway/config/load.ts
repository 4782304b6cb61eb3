/** Reads and validates the static gateway config file. */
import { readFileSync } from 'node:fs'
import { ConfigError, validateConfig, type GatewayConfig } from './schema.ts'

export function loadConfigFile (path: string): GatewayConfig {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (err) {
    throw new ConfigError('', `cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`)
  }
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch (err) {
    throw new ConfigError('', `${path} is not valid JSON: ${(err as Error).message}`)
  }
  return validateConfig(json)
}
