/**
 * A small HTTP CONNECT proxy (RFC 9110 9.3.6) for lab tests: `node bin/run-ts.js THIS HOST:PORT`.
 * Prints `listening HOST:PORT`, then one line `CONNECT AUTHORITY STATUS` per request; anything
 * but CONNECT gets 405. Bounded: 64 connections, 10 s to send the request head.
 */
import net from 'node:net'

const [listen] = process.argv.slice(2)
if (listen === undefined) {
  process.stdout.write('1..0 # SKIP helper script: connect-proxy.ts HOST:PORT\n')
  process.exit(0)
}
const colon = listen.lastIndexOf(':')
let open = 0

const server = net.createServer(client => {
  if (open >= 64) { client.destroy(); return }
  open++
  client.on('close', () => { open-- })
  client.on('error', () => {})
  let head = Buffer.alloc(0)
  const timer = setTimeout(() => { client.destroy() }, 10_000)
  const onData = (chunk: Buffer): void => {
    head = Buffer.concat([head, chunk])
    const end = head.indexOf('\r\n\r\n')
    if (end === -1) { if (head.length > 16_384) client.destroy(); return }
    client.off('data', onData)
    clearTimeout(timer)
    const [method, authority] = head.subarray(0, head.indexOf('\r\n')).toString('latin1').split(' ')
    const rest = head.subarray(end + 4)
    if (method !== 'CONNECT' || authority === undefined) {
      process.stdout.write(`${method ?? '-'} ${authority ?? '-'} 405\n`)
      client.end('HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n')
      return
    }
    const at = authority.lastIndexOf(':')
    const upstream = net.connect({ host: authority.slice(0, at).replace(/^\[|\]$/g, ''), port: Number(authority.slice(at + 1)) })
    upstream.on('error', () => {
      if (!client.writableEnded) {
        process.stdout.write(`CONNECT ${authority} 502\n`)
        client.end('HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n')
      }
      client.destroy()
    })
    upstream.once('connect', () => {
      process.stdout.write(`CONNECT ${authority} 200\n`)
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n')
      if (rest.length > 0) upstream.write(rest)
      client.pipe(upstream).pipe(client)
      client.on('close', () => upstream.destroy())
      upstream.on('close', () => client.destroy())
    })
  }
  client.on('data', onData)
})
server.listen(Number(listen.slice(colon + 1)), listen.slice(0, colon), () => { process.stdout.write(`listening ${listen}\n`) })
for (const sig of ['SIGTERM', 'SIGINT'] as const) process.on(sig, () => { server.close(); process.exit(0) })
