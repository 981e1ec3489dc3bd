// Bitrix24's own PullClient (@bitrix24/b24jssdk, pinned in tests/interop/package.json) against
// imnotify's built-in Push&Pull server (issue 13). Run by tests/pull/run.sh, which makes the TLS
// certificates and sets NODE_EXTRA_CA_CERTS and NODE_PATH.
//
//   node pull_client.cjs ws        WebSocket, text framing (server version 3)
//   node pull_client.cjs poll      long polling (no WebSocket in the environment)
//   node pull_client.cjs expire    WebSocket with 4 s channels: channel_expire, expired -> 4010
//   node pull_client.cjs oauth     WebSocket, an OAuth app through B24HelperManager
//                                  (pull.application.config.get)
//   node pull_client.cjs bench N   N notifications over WebSocket: REST answer -> notifyAdd
//   node pull_client.cjs bench-poll N   the same over long polling
//   node pull_client.cjs idle N    N idle WebSockets: the server's RSS per connection
//
// Env: IMNOTIFY_BIN, PULL_CERT, PULL_KEY. Prints one line per check; exits 1 on any failure.
// With IMNOTIFY_TEST_PG (a PostgreSQL server's URL, from scripts/pg.sh start) the server runs on
// a fresh database there (scripts/pg.sh newdb) instead of SQLite: the same checks on both backends.
'use strict'
const { spawn, execFileSync } = require('node:child_process')
const fs = require('node:fs')
const net = require('node:net')
const os = require('node:os')
const path = require('node:path')

const mode = process.argv[2] || 'ws'
const benchN = Number(process.argv[3] || 100)
const wantSocket = mode === 'ws' || mode === 'oauth' || mode === 'expire' || mode === 'bench'

const WS = require('ws')
if (wantSocket) {
  // What a browser page has: a WebSocket constructor and window listeners, but no `document`
  // (push-pull.md §5.1), so the SDK still treats itself as running outside a browser.
  globalThis.WebSocket = WS
  globalThis.window = { WebSocket: WS, addEventListener() {}, removeEventListener() {} }
} else {
  globalThis.XMLHttpRequest = require('xhr2')
}
const { B24Hook, B24OAuth, B24HelperManager, B24PullClientManager } = require('@bitrix24/b24jssdk')

let failures = 0
function check(name, ok, detail = '') {
  console.log(`${ok ? 'PASS' : 'FAIL'} [${mode}] ${name}${detail ? ': ' + detail : ''}`)
  if (!ok) failures++
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = s.address().port
      s.close(() => resolve(p))
    })
  })
}

class Server {
  constructor(port, dir) {
    this.port = port
    this.dir = dir
    this.base = `https://localhost:${port}`
    const pg = process.env.IMNOTIFY_TEST_PG
    this.databaseUrl = pg
      ? execFileSync('bash', [path.join(__dirname, '..', '..', 'scripts', 'pg.sh'), 'newdb', pg, 'pull'],
        { encoding: 'utf8' }).trim()
      : null
  }
  // serve and the admin commands get the database through the environment, so their command
  // lines are the same on both backends.
  env(extra = {}) {
    const env = { ...process.env, ...extra }
    delete env.IMNOTIFY_DATA_DIR
    delete env.IMNOTIFY_DATABASE_URL
    if (this.databaseUrl) env.IMNOTIFY_DATABASE_URL = this.databaseUrl
    return env
  }
  start() {
    return new Promise((resolve, reject) => {
      const env = this.env({ IMNOTIFY_PUBLIC_URL: this.base, IMNOTIFY_LOG__FILTER: 'warn' })
      if (mode === 'expire') env.IMNOTIFY_PULL__CHANNEL_TTL_SECONDS = '4'
      if (mode === 'idle') {
        // One user holds them all here; the stream limits are raised for the measurement.
        env.IMNOTIFY_EVENTS__MAX_STREAMS_PER_USER = String(benchN + 10)
        env.IMNOTIFY_EVENTS__MAX_STREAMS = String(benchN + 10)
      }
      this.proc = spawn(process.env.IMNOTIFY_BIN, ['serve', '--listen', `127.0.0.1:${this.port}`,
        '--data-dir', this.dir, '--tls-cert', process.env.PULL_CERT, '--tls-key', process.env.PULL_KEY],
      { env, stdio: ['ignore', 'pipe', 'inherit'] })
      let out = ''
      const timer = setTimeout(() => reject(new Error('server did not start')), 30000)
      this.proc.stdout.on('data', (d) => {
        out += d
        if (out.includes('listening on')) { clearTimeout(timer); resolve() }
      })
      this.proc.on('exit', () => reject(new Error('server exited')))
    })
  }
  stop() {
    return new Promise((resolve) => {
      if (!this.proc || this.proc.exitCode !== null) return resolve()
      this.proc.removeAllListeners('exit')
      this.proc.on('exit', () => resolve())
      this.proc.kill('SIGTERM')
    })
  }
  cli(...args) {
    return execFileSync(process.env.IMNOTIFY_BIN, [...args, '--data-dir', this.dir],
      { encoding: 'utf8', env: this.env() })
  }
}

// Collects the im events a PullClient receives, and waits for them.
class Inbox {
  constructor() { this.events = []; this.waiters = [] }
  push(e) {
    e.at = performance.now()
    this.events.push(e)
    for (const w of this.waiters.splice(0)) w()
  }
  async waitFor(pred, ms = 5000) {
    const end = Date.now() + ms
    for (;;) {
      const i = this.events.findIndex(pred)
      if (i >= 0) return this.events[i]
      if (Date.now() > end) return null
      await new Promise((r) => { this.waiters.push(r); setTimeout(r, 50) })
    }
  }
}

async function call(b24, method, params) {
  const res = await b24.actions.v2.call.make({ method, params })
  if (!res.isSuccess) throw new Error(`${method}: ${res.getErrorMessages().join('; ')}`)
  return res.getData().result
}

async function main() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'imnotify-pull-'))
  const server = new Server(await freePort(), path.join(dir, 'data'))
  await server.start()
  let pull
  try {
    const hook = JSON.parse(server.cli('webhook', 'add', '--user-id', '1', '--scope', 'im,pull_channel',
      // The bench sends faster than the default request rate (P8) allows.
      ...(mode.startsWith('bench') ? ['--rate-per-second', '0'] : []), '--json'))
    const secret = hook.code || hook.secret || String(hook.url).split('/').filter(Boolean).pop()
    let b24 = new B24Hook({ b24Url: server.base, userId: 1, secret })

    const inbox = new Inbox()
    const onIm = (data) => inbox.push({ command: data.command, params: data.params })
    if (mode === 'oauth') {
      // An app with the scopes im and pull, installed for user 1: the helper's PullClient calls
      // pull.application.config.get and must still get the user's im events (README
      // "Compatibility").
      const app = JSON.parse(server.cli('app', 'add', '--name', 'Pull test', '--scope', 'im,pull', '--json'))
      const tok = JSON.parse(server.cli('app', 'token', '--client-id', app.client_id, '--user-id', '1', '--json'))
      b24 = new B24OAuth({
        applicationToken: '', userId: 1, memberId: tok.member_id, accessToken: tok.access_token,
        refreshToken: tok.refresh_token, expires: Math.floor(Date.now() / 1000) + 3600, expiresIn: 3600,
        scope: 'im,pull', domain: `localhost:${server.port}`, clientEndpoint: `${server.base}/rest/`,
        serverEndpoint: `${server.base}/rest/`, status: 'L',
      }, { clientId: app.client_id, clientSecret: app.client_secret })
      const helper = new B24HelperManager(b24)
      helper.usePullClient('imnotify', 1)
      helper.subscribePullClient(onIm, 'im')
      helper.startPullClient()
      pull = helper._b24PullClient
      for (let i = 0; i < 100 && !pull.isConnected(); i++) await sleep(100)
      check('the helper PullClient connects with pull.application.config.get', pull.isConnected())
    } else {
      pull = new B24PullClientManager({ b24, userId: 1, siteId: 's1' })
      pull.subscribe({ moduleId: 'im', callback: onIm })
      await pull.start()
    }
    // Long polling is online after the first (immediate) 304; give it that moment.
    await sleep(wantSocket ? 100 : 500)

    if (mode.startsWith('bench')) return await bench(b24, inbox)
    if (mode === 'expire') return await expire(b24, inbox)
    if (mode === 'idle') return await idle(b24, server)

    // 1. notifyAdd within 1 s with id, text and counter.
    const t0 = performance.now()
    const id1 = await call(b24, 'im.notify.system.add', { USER_ID: 1, MESSAGE: 'first # #!NGINXNME!# \u2028 line' })
    const tAnswer = performance.now()
    const add1 = await inbox.waitFor((e) => e.command === 'notifyAdd' && e.params.id === id1, 3000)
    check('notifyAdd arrives within 1 s of the REST answer', add1 && add1.at - tAnswer < 1000,
      add1 ? `${(add1.at - tAnswer).toFixed(1)} ms (call ${(tAnswer - t0).toFixed(1)} ms)` : 'not received')
    check('notifyAdd carries id, text and counter', add1 && add1.params.text === (mode === 'oauth' ? 'Pull test\n' : '') + 'first # #!NGINXNME!# \u2028 line' &&
      add1.params.counter === 1 && add1.params.type === 4, add1 && JSON.stringify(add1.params).slice(0, 200))

    // 2. TAG replace: notifyDelete of the old one, then notifyAdd of the new one.
    const a = await call(b24, 'im.notify.system.add', { USER_ID: 1, MESSAGE: 'tagged 1', TAG: 'PULL_T', CLIENT_ID: 'pulltest' })
    await inbox.waitFor((e) => e.command === 'notifyAdd' && e.params.id === a)
    const mark = inbox.events.length
    const b = await call(b24, 'im.notify.system.add', { USER_ID: 1, MESSAGE: 'tagged 2', TAG: 'PULL_T', CLIENT_ID: 'pulltest' })
    await inbox.waitFor((e) => e.command === 'notifyAdd' && e.params.id === b)
    const after = inbox.events.slice(mark).map((e) => e.command)
    const del = inbox.events.slice(mark).find((e) => e.command === 'notifyDelete')
    check('TAG replace arrives as notifyDelete then notifyAdd',
      after.join(',') === 'notifyDelete,notifyAdd' && del && Object.keys(del.params.id).includes(String(a)),
      `${after.join(',')} ${del ? JSON.stringify(del.params) : ''}`)

    // 3. Read and delete.
    await call(b24, 'im.notify.read', { ID: b, ONLY_CURRENT: 'Y' })
    const read = await inbox.waitFor((e) => e.command === 'notifyRead' && e.params.list.includes(b))
    check('read arrives as notifyRead', read && typeof read.params.counter === 'number', read && JSON.stringify(read.params))
    await call(b24, 'im.notify.delete', { ID: id1 })
    const gone = await inbox.waitFor((e) => e.command === 'notifyDelete' && String(id1) in e.params.id)
    check('delete arrives as notifyDelete with the counter', gone && gone.params.counter === 0, gone && JSON.stringify(gone.params))

    // 4. Resume by mid: the connection drops, notifications are sent meanwhile, the client gets
    //    each exactly once, in order.
    if (wantSocket) {
      pull.connector.socket.terminate()
    }
    const missed = []
    for (let i = 0; i < 3; i++) {
      missed.push(await call(b24, 'im.notify.system.add', { USER_ID: 1, MESSAGE: `while away ${i}` }))
    }
    await inbox.waitFor((e) => e.command === 'notifyAdd' && e.params.id === missed[2], 10000)
    await sleep(300)
    const got = inbox.events.filter((e) => e.command === 'notifyAdd' && missed.includes(e.params.id)).map((e) => e.params.id)
    check('after a drop the missed notifications arrive once, in order', JSON.stringify(got) === JSON.stringify(missed),
      `got ${JSON.stringify(got)} want ${JSON.stringify(missed)}`)

    // 5. A tampered channel signature: close 4010 (WebSocket) or 400 (long poll), no events.
    const cfg = await call(b24, mode === 'oauth' ? 'pull.application.config.get' : 'pull.config.get', { CACHE: 'N' })
    const signed = cfg.channels.private.id
    const tampered = signed.slice(0, -1) + (signed.endsWith('0') ? '1' : '0')
    check('config names wss URLs from public_url and a signed channel',
      cfg.server.websocket === `wss://localhost:${server.port}/subws/` && /^[0-9a-f]{32}\.[0-9a-f]{40}$/.test(signed) &&
      cfg.server.version === 3 && typeof cfg.server.config_timestamp === 'number', JSON.stringify(cfg.server))
    if (wantSocket) {
      const code = await new Promise((resolve) => {
        const s = new WS(`${cfg.server.websocket}?CHANNEL_ID=${encodeURIComponent(tampered)}&revision=19`)
        let messages = 0
        s.on('message', () => messages++)
        s.on('close', (c) => resolve(messages ? `messages ${messages}` : c))
        s.on('error', () => {})
      })
      check('a tampered signature is closed with 4010', code === 4010, String(code))
    } else {
      const res = await fetch(`${cfg.server.long_polling}?CHANNEL_ID=${encodeURIComponent(tampered)}&revision=19&mid=${'0'.repeat(26)}`)
      check('a tampered signature gets no messages on long poll', res.status === 400, String(res.status))
    }

    // 6. JSON-RPC framing (what a version-5 client asks for with jsonRpc=true): a replay from
    //    mid 0 as incoming.message objects with increasing 26-digit mids; `ping` gets `pong`.
    if (wantSocket) {
      const rpc = await new Promise((resolve) => {
        const s = new WS(`${cfg.server.websocket}?CHANNEL_ID=${encodeURIComponent(signed)}&jsonRpc=true&mid=${'0'.repeat(26)}&revision=19`)
        const got = { msgs: [], pong: false }
        s.on('open', () => s.send('ping'))
        s.on('message', (d) => {
          const t = d.toString()
          if (t === 'pong') got.pong = true
          else { const j = JSON.parse(t); got.msgs.push(...(Array.isArray(j) ? j : [j])) }
          if (got.pong && got.msgs.length >= 3) s.close()
        })
        s.on('close', () => resolve(got))
        setTimeout(() => s.terminate(), 5000)
      })
      const mids = rpc.msgs.map((m) => m.params.mid)
      check('JSON-RPC mode replays incoming.message with increasing mids and answers ping',
        rpc.pong && rpc.msgs.length > 3 && rpc.msgs.every((m) => m.jsonrpc === '2.0' && m.method === 'incoming.message' &&
          /^[0-9]{26}$/.test(m.params.mid) && m.params.body.module_id === 'im') &&
          mids.every((m, i) => i === 0 || m > mids[i - 1]),
      `${rpc.msgs.length} messages, pong ${rpc.pong}`)
    }

    // 7. Server restart: sockets are closed with 1001; the client reconnects and gets what was
    //    sent after the server came back and before it reconnected.
    let goingAway = null
    if (wantSocket) {
      const s = new WS(`${cfg.server.websocket}?CHANNEL_ID=${encodeURIComponent(signed)}&revision=19`)
      await new Promise((r) => s.on('open', r))
      goingAway = new Promise((r) => s.on('close', (c) => r(c)))
    }
    await server.stop()
    if (goingAway) {
      const code = await goingAway
      check('a graceful shutdown closes sockets with 1001', code === 1001, `closed with ${code}`)
    }
    await server.start()
    const back = await call(b24, 'im.notify.system.add', { USER_ID: 1, MESSAGE: 'after restart' })
    const seen = await inbox.waitFor((e) => e.command === 'notifyAdd' && e.params.id === back, 40000)
    check('after a server restart the client reconnects and misses nothing', seen !== null)
    pull.destroy()
    pull = null
  } finally {
    if (pull) pull.destroy()
    await server.stop()
  }
}

function rawSocket(url) {
  const s = new WS(url)
  const got = { frames: [], code: null }
  s.on('message', (d) => got.frames.push(d.toString()))
  got.closed = new Promise((r) => s.on('close', (c) => { got.code = c; r(c) }))
  s.on('error', () => {})
  got.socket = s
  return got
}

async function expire(b24, inbox) {
  const cfg = await call(b24, 'pull.config.get', { CACHE: 'N' })
  const old = cfg.channels.private.id
  const url = (id) => `${cfg.server.websocket}?CHANNEL_ID=${encodeURIComponent(id)}&revision=19`
  const raw = rawSocket(url(old))
  for (let i = 0; i < 80 && !raw.frames.length; i++) await sleep(100)
  const m = /#!NGINXNMS!#(.*?)#!NGINXNME!#/.exec(raw.frames[0] || '')
  const msg = m && JSON.parse(m[1])
  const p = msg && msg.text.params
  check('at the channel end the socket gets channel_expire with a new channel',
    msg && msg.text.module_id === 'pull' && msg.text.command === 'channel_expire' && p.action === 'reconnect' &&
      p.channel.id === old && /^[0-9a-f]{32}\.[0-9a-f]{40}$/.test(p.new_channel.id) && /^[0-9]{26}$/.test(msg.mid),
    raw.frames[0] && raw.frames[0].slice(0, 300))
  raw.socket.terminate()
  const stale = rawSocket(url(old))
  check('an expired channel is closed with 4010', (await stale.closed) === 4010, String(stale.code))
  if (p) {
    const fresh = rawSocket(url(p.new_channel.id))
    await sleep(1000)
    check('the new channel is accepted', fresh.code === null, String(fresh.code))
    fresh.socket.terminate()
  }
  // The real client went through the same expiry: it still receives.
  const id = await call(b24, 'im.notify.system.add', { USER_ID: 1, MESSAGE: 'after expiry' })
  const e = await inbox.waitFor((x) => x.command === 'notifyAdd' && x.params.id === id, 40000)
  check('the PullClient still receives after its channel expired', e !== null)
}

function rssKiB(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))
  return Number(m[1])
}

async function idle(b24, server) {
  const cfg = await call(b24, 'pull.config.get', { CACHE: 'N' })
  const url = `${cfg.server.websocket}?CHANNEL_ID=${encodeURIComponent(cfg.channels.private.id)}&revision=19`
  await sleep(500)
  const before = rssKiB(server.proc.pid)
  const sockets = []
  let open = 0
  let closed = 0
  for (let i = 0; i < benchN; i += 100) {
    const batch = []
    for (let j = i; j < Math.min(benchN, i + 100); j++) {
      const s = new WS(url, { perMessageDeflate: false })
      sockets.push(s)
      batch.push(new Promise((r) => {
        s.on('open', () => { open++; r() })
        s.on('close', () => { closed++; r() })
        s.on('error', () => r())
      }))
    }
    await Promise.all(batch)
  }
  await sleep(3000)
  const after = rssKiB(server.proc.pid)
  check(`${benchN} idle sockets stay open`, open === benchN && closed === 0, `open ${open}, closed ${closed}`)
  // A notification still reaches one of them while all are held.
  const one = new Promise((r) => sockets[0].once('message', (d) => r(d.toString())))
  await call(b24, 'im.notify.system.add', { USER_ID: 1, MESSAGE: 'to all' })
  const t = Date.now()
  await Promise.race([one, sleep(30000)])
  console.log(`IDLE ${open} WebSockets over TLS: server RSS ${(before / 1024).toFixed(1)} MiB -> ${(after / 1024).toFixed(1)} MiB, ` +
    `${((after - before) / Math.max(open, 1)).toFixed(1)} KiB per connection; a notification reached the first socket in ${Date.now() - t} ms`)
  for (const s of sockets) s.terminate()
}

async function bench(b24, inbox) {
  const lat = []
  const full = []
  for (let i = 0; i < benchN; i++) {
    const t0 = performance.now()
    const id = await call(b24, 'im.notify.system.add', { USER_ID: 1, MESSAGE: `bench ${i}` })
    const t = performance.now()
    const e = await inbox.waitFor((x) => x.command === 'notifyAdd' && x.params.id === id, 5000)
    if (!e) { check(`bench notification ${i} arrived`, false); continue }
    // Negative when the event beat the REST answer (the hub is fed at the commit, before the
    // answer is written).
    lat.push(e.at - t)
    full.push(e.at - t0)
    await sleep(20)
  }
  const stat = (xs) => {
    xs.sort((x, y) => x - y)
    return `median ${xs[Math.floor(xs.length / 2)].toFixed(2)} ms, worst ${xs[xs.length - 1].toFixed(2)} ms`
  }
  console.log(`BENCH [${mode}] ${lat.length} notifications; REST answer -> notifyAdd: ${stat(lat)}; REST call sent -> notifyAdd: ${stat(full)}`)
}

main().then(() => {
  process.exit(failures ? 1 : 0)
}, (e) => {
  console.error(e)
  process.exit(1)
})
