// The lab itself, checked with wireguard-go on both ends: if these fail, interop failures mean
// nothing. Needs root + wireguard-go; skipped with a reason otherwise (failed under CC_REQUIRE_INTEROP=1).
import t from 'tap'
import { createHash, randomBytes } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { spawnSync } from 'node:child_process'
import { Lab, parsePing, parseWgDump, requireLab, run, runOk, sweepStaleLabs } from './lab.ts'
import { addNetns, claimRun, netnsName, netnsPids, STATE_DIR, writeNetnsHosts } from './lab/netns.ts'

t.test('parsePing reads iputils output', async t => {
  const out = `PING 10.100.0.1 (10.100.0.1) 56(84) bytes of data.
64 bytes from 10.100.0.1: icmp_seq=1 ttl=64 time=2.97 ms
64 bytes from 10.100.0.1: icmp_seq=3 ttl=64 time=0.47 ms
64 bytes from 10.100.0.1: icmp_seq=3 ttl=64 time=0.48 ms (DUP!)

--- 10.100.0.1 ping statistics ---
4 packets transmitted, 2 received, +1 duplicates, 50% packet loss, time 608ms
`
  const r = parsePing(out)
  t.equal(r.transmitted, 4)
  t.equal(r.received, 2)
  t.equal(r.loss, 0.5)
  t.same(r.lostSeqs, [2, 4])
  t.throws(() => parsePing('ping: connect: Network is unreachable\n'))
})

t.test('parseWgDump reads `wg show IF dump`', async t => {
  const d = parseWgDump('cHJpdg==\tcHVi\t51821\toff\n' +
    'cGVlcg==\t(none)\t198.18.0.1:51820\t10.100.0.1/32,10.100.0.0/24\t1700000000\t476\t532\t25\n' +
    'cGVlcjI=\t(none)\t(none)\t(none)\t0\t0\t0\toff\n')
  t.equal(d.listenPort, 51821)
  t.equal(d.peers.length, 2)
  t.same(d.peers[0].allowedIPs, ['10.100.0.1/32', '10.100.0.0/24'])
  t.equal(d.peers[0].endpoint, '198.18.0.1:51820')
  t.equal(d.peers[0].latestHandshake, 1700000000)
  t.equal(d.peers[0].persistentKeepalive, 25)
  t.equal(d.peers[1].endpoint, null)
  t.same(d.peers[1].allowedIPs, [])
  t.equal(d.peers[1].persistentKeepalive, null)
})

/** Alive and not a zombie (an orphan's zombie waits for init to reap it). */
function running (pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'))
  } catch {
    return false
  }
}

/** Lab addresses or routes in the host namespace would leak to the real network. */
async function hostHasLabState (): Promise<string | null> {
  const addrs = await runOk('ip', ['-o', 'addr'])
  const routes = await runOk('ip', ['route', 'show', 'table', 'all'])
  const bad = (addrs + routes).split('\n').filter(l => /\b198\.1[89]\.|\b10\.100\./.test(l))
  return bad.length > 0 ? bad.join('\n') : null
}

t.test('wireguard-go <-> wireguard-go through lab namespaces', async t => {
  if (!requireLab(t, ['nginx'])) return
  const lab = await Lab.create(t)
  const a = await lab.namespace('a')
  const b = await lab.namespace('b')
  const { a: aEnd, b: bEnd } = await lab.link(a, b)
  t.match(aEnd.cidr, /^198\.1[89]\.\d+\.\d+\/30$/)

  const wa = await lab.startWireguardGo(a, { address: '10.100.0.1/24', listenPort: 51820 })
  const wb = await lab.startWireguardGo(b, {
    address: '10.100.0.2/32',
    listenPort: 51821,
    peers: [{ publicKey: wa.publicKey, allowedIPs: ['10.100.0.1/32'], endpoint: `${aEnd.ip}:51820` }],
  })
  await wa.setPeer({ publicKey: wb.publicKey, allowedIPs: ['10.100.0.2/32'] })
  t.not(wa.ifname, wb.ifname, 'distinct interface names (shared socket directory)')
  t.equal(await hostHasLabState(), null, 'host namespace has no lab addresses or routes')

  const r = await lab.ping(b, '10.100.0.1', { count: 20, interval: 0.05 })
  t.equal(r.transmitted, 20)
  t.equal(r.received, 20, 'every ping answered')

  const peer = await wb.peer(wa.publicKey)
  t.ok(peer.latestHandshake > 0, 'handshake recorded')
  t.ok(peer.rxBytes > 0 && peer.txBytes > 0, 'bytes counted')
  t.equal((await wa.peer(wb.publicKey)).endpoint, `${bEnd.ip}:51821`, 'responder learned the endpoint')

  // nginx behind the tunnel, and an upload to the HTTP sink with its hash checked.
  const root = join(lab.dir, 'www')
  mkdirSync(root)
  const body = randomBytes(3 << 20)
  writeFileSync(join(root, 'blob'), body)
  await lab.startNginx(a, { root, listen: '10.100.0.1:80' })
  const saved = join(lab.dir, 'downloaded')
  const got = await lab.curl(b, ['-sS', '--fail', '--max-time', '30', '-o', saved, 'http://10.100.0.1/blob'])
  t.equal(got.code, 0, got.stderr)
  t.equal(createHash('sha256').update(readFileSync(saved)).digest('hex'), createHash('sha256').update(body).digest('hex'), 'download intact')

  // Per-namespace host names (ip netns exec mounts /etc/netns/NS/hosts over /etc/hosts).
  lab.hosts(b, { 'origin.test': '10.100.0.1' })
  const named = await lab.curl(b, ['-sS', '--fail', '--max-time', '30', '-o', '/dev/null', '-w', '%{size_download}', 'http://origin.test/blob'])
  t.equal(named.stdout, String(body.length), 'name from the namespace hosts file resolves')
  t.not(readFileSync('/etc/hosts', 'utf8').includes('origin.test'), true, 'host /etc/hosts untouched')

  await lab.startHttpSink(a, '10.100.0.1:8080')
  const upload = lab.file('upload.bin', body)
  const put = await lab.curl(b, ['-sS', '--max-time', '30', '-T', upload, 'http://10.100.0.1:8080/sink'])
  t.equal(put.code, 0, put.stderr)
  t.same(JSON.parse(put.stdout), { bytes: body.length, sha256: createHash('sha256').update(body).digest('hex') }, 'upload intact')

  // The host namespace cannot reach lab addresses (no route leaks the other way either).
  const direct = await run('ping', ['-c', '1', '-W', '1', '-n', '10.100.0.1'], { timeoutMs: 10_000 })
  t.not(direct.code, 0, 'host namespace cannot reach tunnel addresses')
})

t.test('handshake flood: mac1 is valid, so wireguard-go under load answers with cookies', async t => {
  if (!requireLab(t)) return
  const lab = await Lab.create(t)
  const gw = await lab.namespace('gw')
  const flooder = await lab.namespace('flood')
  const { a: gwEnd } = await lab.link(gw, flooder)
  const target = await lab.startWireguardGo(gw, { address: '10.100.0.1/24', listenPort: 51820 })
  // wireguard-go is under load only while its handshake queue holds 128 or more: 20,000 in about
  // 0.8 s outruns it on any machine; spread over 4 s, a fast vCPU spell can keep up and send no cookie.
  const r = await lab.flood(flooder, { target: `${gwEnd.ip}:51820`, serverPublicKey: target.publicKey, count: 20_000, durationMs: 1000, sockets: 100 })
  t.comment(JSON.stringify(r))
  t.equal(r.sent, 20_000)
  t.ok(r.cookieReplies > 0, 'cookie replies answer our initiations (wireguard-go checks mac1 first)')
  t.equal(r.responses, 0, 'no handshake completes with random content')
  // With a wrong server key mac1 is invalid: a responder must stay silent (paper 5.4.4).
  const wrongKey = await lab.startWireguardGo(gw, { address: '10.100.0.5/32', listenPort: 51830 })
  const silent = await lab.flood(flooder, { target: `${gwEnd.ip}:51830`, serverPublicKey: target.publicKey, count: 2000, durationMs: 500, sockets: 10, waitMs: 500 })
  t.equal(silent.cookieReplies + silent.responses + silent.otherReplies, 0, `no reply to a bad mac1 (${wrongKey.ifname})`)
})

t.test('destroy stops processes, then removes namespaces and sockets', async t => {
  if (!requireLab(t)) return
  const lab = await Lab.create()
  const ns = await lab.namespace('x')
  const wg = await lab.startWireguardGo(ns, { address: '10.100.0.9/32', listenPort: 51820 })
  const sleeper = lab.spawn(ns, 'sleep', 'sleep', ['600'])
  lab.hosts(ns, { 'x.test': '10.100.0.9' })
  t.ok(existsSync(`/run/netns/${ns}`))
  t.ok(existsSync(`/var/run/wireguard/${wg.ifname}.sock`))
  await lab.destroy()
  t.notOk(sleeper.running, 'sleep stopped')
  t.notOk(wg.process.running, 'wireguard-go stopped')
  t.notOk(existsSync(`/run/netns/${ns}`), 'namespace deleted')
  t.notOk(existsSync(`/var/run/wireguard/${wg.ifname}.sock`), 'control socket removed')
  t.notOk(existsSync(lab.dir), 'temporary directory removed')
  t.notOk(existsSync(`/etc/netns/${ns}`), 'namespace /etc files removed')
  t.notOk(existsSync(`${STATE_DIR}/${lab.runId}.pid`), 'owner file removed')
})

t.test('sweeper removes labs of dead runs only', async t => {
  if (!requireLab(t)) return
  // A "crashed" run: owner file naming a process that has exited, a namespace with a process in it.
  const dead = spawnSync('true').pid!
  const crashedRun = randomBytes(4).toString('hex')
  claimRun(crashedRun)
  writeFileSync(`${STATE_DIR}/${crashedRun}.pid`, `${dead}\n`)
  const crashedNs = netnsName(crashedRun, 'old')
  await addNetns(crashedNs)
  writeNetnsHosts(crashedNs, { 'old.test': '10.100.0.7' })
  const orphan = spawnSync('ip', ['netns', 'exec', crashedNs, 'sh', '-c', 'sleep 600 >/dev/null 2>&1 & echo $!'], { encoding: 'utf8' })
  const orphanPid = Number(orphan.stdout.trim())
  t.ok(orphanPid > 0, 'orphan started')

  // A live run (this process) must survive the sweep.
  const live = await Lab.create(t)
  const liveNs = await live.namespace('live')

  const removed = await sweepStaleLabs()
  t.ok(removed.includes(crashedNs), 'crashed run swept')
  t.notOk(existsSync(`/run/netns/${crashedNs}`))
  t.notOk(existsSync(`/etc/netns/${crashedNs}`), 'its /etc/netns files too')
  t.notOk(existsSync(`${STATE_DIR}/${crashedRun}.pid`), 'dead owner file removed')
  t.notOk(running(orphanPid), 'process left in the crashed namespace was stopped')
  t.notOk(removed.includes(liveNs), 'live run kept')
  t.ok(existsSync(`/run/netns/${liveNs}`))
  t.same(await netnsPids(liveNs), [])
})

t.test('requireLab skips with a reason, or fails under CC_REQUIRE_INTEROP=1', async t => {
  const calls: string[] = []
  const fake = {
    teardown: () => {},
    plan: (n: number, why?: string) => { calls.push(`plan ${n} ${why}`) },
    fail: (why: string) => { calls.push(`fail ${why}`) },
    comment: () => {},
  }
  const saved = process.env.CC_REQUIRE_INTEROP
  t.teardown(() => { if (saved === undefined) delete process.env.CC_REQUIRE_INTEROP; else process.env.CC_REQUIRE_INTEROP = saved })
  delete process.env.CC_REQUIRE_INTEROP
  t.equal(requireLab(fake, ['cc-no-such-tool']), false)
  t.match(calls.pop(), /^plan 0 .*cc-no-such-tool/)
  process.env.CC_REQUIRE_INTEROP = '1'
  t.equal(requireLab(fake, ['cc-no-such-tool']), false)
  t.match(calls.pop(), /^fail .*cc-no-such-tool/)
  t.equal(calls.length, 0)
})
