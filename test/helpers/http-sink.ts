/**
 * A tiny HTTP upload sink: every request body is hashed (SHA-256) and discarded, and the answer is
 * `{"bytes":N,"sha256":"hex"}`. Used by the lab (uploads through a tunnel) and the benchmarks,
 * where nginx cannot take PUT bodies.
 *
 *   node bin/run-ts.js test/helpers/http-sink.ts [HOST:]PORT
 */
import { createServer } from 'node:http'
import { createHash } from 'node:crypto'

const listen = process.argv[2] ?? '0.0.0.0:8080'
const colon = listen.lastIndexOf(':')
const host = colon >= 0 ? listen.slice(0, colon) : '0.0.0.0'
const port = Number(colon >= 0 ? listen.slice(colon + 1) : listen)

const server = createServer((req, res) => {
  const hash = createHash('sha256')
  let bytes = 0
  req.on('data', (chunk: Buffer) => { bytes += chunk.length; hash.update(chunk) })
  req.on('end', () => {
    const body = JSON.stringify({ bytes, sha256: hash.digest('hex') }) + '\n'
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
    res.end(body)
  })
  req.on('error', () => res.destroy())
})
server.keepAliveTimeout = 60_000
server.requestTimeout = 0 // a long upload is not a slow client
server.listen(port, host, () => { process.stdout.write(`listening ${host}:${port}\n`) })
for (const sig of ['SIGTERM', 'SIGINT'] as const) process.on(sig, () => server.close(() => process.exit(0)))
