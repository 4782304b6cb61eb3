#!/usr/bin/env node
// Entry point: loads the TypeScript sources through tsx's ESM loader (no build step).
import { register } from 'tsx/esm/api'
register()
const { main } = await import('../cli/main.ts')
await main(process.argv.slice(2))
