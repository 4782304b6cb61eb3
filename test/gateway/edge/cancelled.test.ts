// A request the client gives up on is logged as cancelled (nginx's 499), whether it left before the
// origin answered or in the middle of the body; a response cut by the origin's failure is not.
import t, { type Test } from 'tap'
import https from 'node:https'
import { loopbackLookup, readToEnd, route, startDyingOrigin, startEdge, startOrigin, waitFor, type TestEdge } from './helpers.ts'

/** Sends GET `path`; calls `cancel` as soon as `when` happens, then destroys the request. */
function cancelAt (te: TestEdge, path: string, when: 'sent' | 'first-byte'): Promise<void> {
  return new Promise(resolve => {
    const req = https.request({ host: 'a.example.test', port: te.port, path, ca: te.ca, lookup: loopbackLookup, agent: false }, res => {
      if (when === 'first-byte') res.once('data', () => { req.destroy(); resolve() })
    })
    req.on('error', () => {})
    req.end()
    if (when === 'sent') setTimeout(() => { req.destroy(); resolve() }, 300)
  })
}

function requestLine (te: TestEdge, path: string): Record<string, unknown> | undefined {
  return te.lines.find(l => l.msg === 'request' && l.path === path)
}

/** The access-log line of `path` once written, checked to be a cancelled request (499). */
async function cancelledLine (t: Test, te: TestEdge, path: string): Promise<Record<string, unknown>> {
  t.ok(await waitFor(() => requestLine(te, path) !== undefined), 'logged')
  const line = requestLine(te, path)!
  t.equal(line.status, 499)
  t.equal(line.cancelled, true)
  return line
}

t.test('client closes before the slow origin answers -> logged 499 cancelled, not 502', async t => {
  let originSawClose = false
  const { port } = await startOrigin(t, (req, res) => {
    const timer = setTimeout(() => { res.writeHead(200).end('late') }, 3_000)
    res.on('close', () => { clearTimeout(timer); originSawClose = true })
  })
  const te = await startEdge(t, [route('a', port, ['a.example.test'])])
  await cancelAt(te, '/before-headers', 'sent')
  const line = await cancelledLine(t, te, '/before-headers')
  t.notOk('upstreamStatus' in line, 'the origin had not answered')
  t.ok(await waitFor(() => originSawClose), 'the origin request is given up too')
})

t.test('client closes in the middle of a slow body -> logged 499 cancelled with the origin\'s status', async t => {
  const { port } = await startOrigin(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' })
    res.write('first chunk')
    const timer = setInterval(() => res.write('more'), 200)
    res.on('close', () => { clearInterval(timer) })
  })
  const te = await startEdge(t, [route('a', port, ['a.example.test'])])
  await cancelAt(te, '/mid-body', 'first-byte')
  const line = await cancelledLine(t, te, '/mid-body')
  t.equal(line.upstreamStatus, 200)
  t.ok((line.bytesOut as number) >= 'first chunk'.length)
})

t.test('origin dies mid-body -> not cancelled: the origin\'s status, cut, with the error', async t => {
  const { port } = await startDyingOrigin(t, 100_000)
  const te = await startEdge(t, [route('a', port, ['a.example.test'])])
  await readToEnd(te, '/origin-dies')
  t.ok(await waitFor(() => requestLine(te, '/origin-dies') !== undefined), 'logged')
  const line = requestLine(te, '/origin-dies')!
  t.equal(line.status, 200)
  t.notOk('cancelled' in line)
  t.equal(line.aborted, true)
})
