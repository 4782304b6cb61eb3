/**
 * Provisions an account and an instance against a running service and prints the Instance as
 * JSON: for tests that must do it inside a network namespace.
 *   node --import tsx test/agent/provision.ts <api url> <outbox dir> <subdomain>
 */
import { createInstance, type Service } from './service.ts'

const [api, outbox, subdomain] = process.argv.slice(2)
if (api === undefined || outbox === undefined || subdomain === undefined) {
  // Run without arguments (e.g. by `tap test/agent`): not a test file.
  process.stdout.write('1..0 # SKIP helper script: provision.ts <api url> <outbox dir> <subdomain>\n')
  process.exit(0)
}
const instance = await createInstance({ api, outbox } as Service, subdomain)
process.stdout.write(JSON.stringify(instance) + '\n')
