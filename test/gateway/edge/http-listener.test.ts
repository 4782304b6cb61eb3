/**
 * The plain-HTTP listener: redirects to HTTPS keep path and query (301 for GET/HEAD, 308
 * otherwise), ACME HTTP-01 challenges go to the responder and are never redirected, unknown hosts
 * get the 404 page.
 */
import t from 'tap'
import http from 'node:http'
import { startEdge, route, type TestEdge } from './helpers.ts'
import type { ChallengeResponder } from '../../../gateway/edge/index.ts'

function plain (te: TestEdge, host: string, method: string, path: string): Promise<{ status: number, headers: http.IncomingHttpHeaders, body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: te.httpPort, method, path, headers: { host }, agent: false }, res => {
      let body = ''
      res.on('data', (c: Buffer) => { body += c.toString() })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }))
    })
    req.on('error', reject)
    req.end(method === 'POST' ? 'data' : undefined)
  })
}

t.test('redirects keep path and query; 301 for GET/HEAD, 308 for others', async t => {
  const te = await startEdge(t, [route('a', 9, ['a.example.test'])], { publicHttpsPort: 443 })
  const get = await plain(te, 'A.Example.Test:80', 'GET', '/s/abc?download=1&x=%2F')
  t.equal(get.status, 301)
  t.equal(get.headers.location, 'https://a.example.test/s/abc?download=1&x=%2F')
  t.equal((await plain(te, 'a.example.test', 'HEAD', '/')).status, 301)
  const post = await plain(te, 'a.example.test', 'POST', '/files/')
  t.equal(post.status, 308, 'method and body kept by the client')
  t.equal(post.headers.location, 'https://a.example.test/files/')
})

t.test('a non-443 public HTTPS port appears in Location', async t => {
  const te = await startEdge(t, [route('a', 9, ['a.example.test'])], { publicHttpsPort: 8443 })
  t.equal((await plain(te, 'a.example.test', 'GET', '/x')).headers.location, 'https://a.example.test:8443/x')
})

t.test('unknown hosts get the 404 page, not a redirect', async t => {
  const te = await startEdge(t, [route('a', 9, ['a.example.test'])])
  const r = await plain(te, 'evil.example.test', 'GET', '/')
  t.equal(r.status, 404)
  t.equal(r.headers.location, undefined)
  t.match(r.body, /No Erugo instance here/)
})

t.test('ACME challenges go to the responder and are never redirected', async t => {
  const asked: Array<[string, string]> = []
  const challenges: ChallengeResponder = {
    keyAuthorization: async (host, token) => {
      asked.push([host, token])
      return token === 'good-token_1' ? `${token}.thumbprint` : undefined
    },
  }
  const te = await startEdge(t, [route('a', 9, ['a.example.test'])], { challenges })
  const ok = await plain(te, 'a.example.test', 'GET', '/.well-known/acme-challenge/good-token_1')
  t.equal(ok.status, 200)
  t.equal(ok.body, 'good-token_1.thumbprint')
  t.equal(ok.headers.location, undefined)
  t.equal((await plain(te, 'a.example.test', 'GET', '/.well-known/acme-challenge/other')).status, 404)
  t.equal((await plain(te, 'a.example.test', 'GET', '/.well-known/acme-challenge/bad%20token')).status, 404, 'malformed token: not asked')
  t.same(asked, [['a.example.test', 'good-token_1'], ['a.example.test', 'other']])
})

t.test('the default responder knows no challenges: 404', async t => {
  const te = await startEdge(t, [route('a', 9, ['a.example.test'])])
  const r = await plain(te, 'a.example.test', 'GET', '/.well-known/acme-challenge/anything')
  t.equal(r.status, 404)
  t.equal(r.headers.location, undefined)
})

t.test('a responder that throws gives 500, and the listener keeps working', async t => {
  const te = await startEdge(t, [route('a', 9, ['a.example.test'])], { challenges: { keyAuthorization: () => { throw new Error('boom') } } })
  t.equal((await plain(te, 'a.example.test', 'GET', '/.well-known/acme-challenge/tok')).status, 500)
  t.equal((await plain(te, 'a.example.test', 'GET', '/')).status, 301)
})
