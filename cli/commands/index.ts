/** The command table. Each entry's module is imported lazily so `--help` stays fast. */
export interface Command {
  summary: string
  run: (argv: string[]) => Promise<void>
}

function lazy (summary: string, load: () => Promise<{ run: (argv: string[]) => Promise<void> }>): Command {
  return { summary, run: async argv => { await (await load()).run(argv) } }
}

export const commands: Record<string, Command> = {
  // Entries are added as the programs land: keygen, pubkey, gateway, control, start, migrate, agent.
  keygen: lazy('print a new WireGuard private key (like wg genkey)', async () => await import('./keygen.ts')),
  pubkey: lazy('print the public key of a private key read on stdin (like wg pubkey)', async () => await import('./pubkey.ts')),
  start: lazy('run control and gateway together on this machine (npm start): API on :8080, WireGuard on :51820, HTTPS on :8443', async () => await import('./start.ts')),
  gateway: lazy('run the userspace WireGuard gateway and HTTPS edge (--config FILE or --control URL); gateway drain|undrain ID', async () => await import('./gateway.ts')),
  control: lazy('run the control API (CC_API_PORT, default 3000) and the gateway RPC listener (CC_RPC_PORT, default 8081)', async () => await import('./control.ts')),
  migrate: lazy('apply, roll back or list control database migrations (up|down|status)', async () => await import('./migrate.ts')),
  admin: lazy('grant or revoke the administrator role of an account (admin grant|revoke EMAIL)', async () => await import('./admin.ts')),
  agent: lazy('container side: connect this Erugo container to Cloud Connect (run | status | test)', async () => await import('./agent.ts')),
}
