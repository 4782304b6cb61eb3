import { PGlite } from '@electric-sql/pglite'
let t0 = Date.now()
const a = new PGlite(); await a.waitReady; console.log('fresh', Date.now() - t0); t0 = Date.now()
const dump = await a.dumpDataDir('gzip'); console.log('dump', Date.now() - t0, dump.size); t0 = Date.now()
const b = new PGlite({ loadDataDir: dump }); await b.waitReady; console.log('from dump', Date.now() - t0); t0 = Date.now()
const c = new PGlite(); await c.waitReady; console.log('fresh2', Date.now() - t0); t0 = Date.now()
