// Shared helpers of the browser tests: the real imnotify binary on loopback, Debian's chromium
// through playwright-core (never a downloaded browser), sign-in and REST calls.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
export const ROOT = join(here, '..', '..');
export const BIN = process.env.IMNOTIFY_BIN || join(ROOT, 'target', 'debug', 'imnotify');
export const ARTIFACTS = join(ROOT, 'target', 'artifacts');
export const PASSWORD = 'browser-test-password';
export const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run'];

/**
 * IMNOTIFY_TEST_PG: a PostgreSQL server's URL (scripts/pg.sh start prints one). When set, every
 * server runs on a fresh database there (scripts/pg.sh newdb) instead of SQLite, and `sql` goes
 * through psql: the same tests on both backends.
 */
const PG_SERVER = process.env.IMNOTIFY_TEST_PG || '';
const PG_SH = join(ROOT, 'scripts', 'pg.sh');

/**
 * Starts imnotify on a free port with a fresh data dir (and a fresh database on PostgreSQL);
 * user 1 gets a password. `server.cli(...args)` runs an admin command on the same storage.
 */
export async function startServer(env = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'imnotify-browser-'));
  const databaseUrl = PG_SERVER
    ? execFileSync('bash', [PG_SH, 'newdb', PG_SERVER, 'browser']).toString().trim()
    : '';
  // serve and the admin commands get the database through the environment, so their command
  // lines are the same on both backends.
  const childEnv = { ...process.env, IMNOTIFY_DATA_DIR: '', IMNOTIFY_DATABASE_URL: databaseUrl, ...env };
  if (!databaseUrl) delete childEnv.IMNOTIFY_DATABASE_URL;
  const cli = (...args) => execFileSync(BIN, [...args, '--data-dir', dir], { env: childEnv });
  const child = spawn(BIN, ['serve', '--listen', '127.0.0.1:0', '--data-dir', dir], {
    stdio: ['ignore', 'pipe', 'ignore'],
    env: childEnv,
  });
  const lines = createInterface({ input: child.stdout });
  let base, hook;
  for await (const line of lines) {
    if (line.startsWith('imnotify listening on ')) base = line.slice('imnotify listening on '.length).trim();
    if (line.startsWith('Webhook: ')) { hook = line.slice('Webhook: '.length).trim(); break; }
  }
  if (!base || !hook) throw new Error('imnotify did not start');
  child.stdout.resume();
  cli('user', 'password', '--id', '1', '--password', PASSWORD);
  return {
    base, hook, dir, child, cli, databaseUrl,
    db: join(dir, 'imnotify.sqlite3'),
    async stop() {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Calls a REST method through the first-start webhook; returns the `result`. */
export async function rest(server, method, params = {}) {
  const r = await fetch(`${server.hook}${method}.json`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(params),
  });
  const body = await r.json();
  if (body.error) throw new Error(`${method}: ${body.error} ${body.error_description}`);
  return body.result;
}

/**
 * Runs SQL against the server's database, for rows REST cannot create (confirmations): SQLite's
 * file, or the PostgreSQL database through psql. Write statements both dialects accept.
 */
export function sql(server, statement) {
  if (server.databaseUrl) {
    return execFileSync('bash', [PG_SH, 'sql', server.databaseUrl, statement]).toString().trim();
  }
  return execFileSync('sqlite3', ['-cmd', '.timeout 10000', server.db, statement]).toString().trim();
}

/** Whole seconds since the Unix epoch, for rows written with `sql`. */
export const unixNow = () => Math.floor(Date.now() / 1000);

export async function launch() {
  return chromium.launch({ executablePath: '/usr/bin/chromium', args: CHROMIUM_ARGS, headless: true });
}

/** A new context signed in as user 1, with a page on the center. */
export async function signedIn(browser, server, contextOptions = {}) {
  const context = await browser.newContext({ locale: 'en-US', ...contextOptions });
  const page = await context.newPage();
  await signIn(page, server);
  return { context, page };
}

/** Signs a page in as user 1 through the login form; ends on the center. */
export async function signIn(page, server) {
  await page.goto(`${server.base}/`);
  await page.fill('input[name=login]', '1');
  await page.fill('input[name=password]', PASSWORD);
  await Promise.all([page.waitForURL(`${server.base}/`), page.click('button[type=submit]')]);
}

/**
 * Fails clearly when the event stream the live tests need is absent (it comes from the delivery
 * branch): GET /events must answer text/event-stream for a signed-in session.
 */
export async function requireEvents(context, server) {
  const cookies = await context.cookies(server.base);
  const cookie = cookies.map((c) => `${c.name}=${c.value}`).join('; ');
  const ac = new AbortController();
  let r;
  try {
    r = await fetch(`${server.base}/events`, { headers: { cookie }, signal: ac.signal });
  } finally {
    setTimeout(() => ac.abort(), 0);
  }
  const type = r.headers.get('content-type') || '';
  if (r.status !== 200 || !type.startsWith('text/event-stream')) {
    throw new Error(`GET /events answered ${r.status} ${type}: the live tests need the SSE endpoint ` +
      '(branch delivery, issue 12 §2), which this build does not have');
  }
}

/** The page's unread badge as a number (0 when hidden). */
export async function badge(page) {
  return page.evaluate(() => {
    const b = document.getElementById('badge');
    return b.hidden ? 0 : Number(b.textContent);
  });
}

/** Waits until the page has the notification with this id. */
export async function waitItem(page, id, timeout = 5000) {
  await page.waitForSelector(`#n-${id}`, { state: 'attached', timeout });
}

/** A loopback HTTP server with a few SVG pictures, so the screenshot shows real images. */
export async function imageServer() {
  const { createServer } = await import('node:http');
  const svg = (w, h, a, b, label) => `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}">` +
    `<defs><linearGradient id="g" x1="0" y1="0" x2="1" y2="1"><stop offset="0" stop-color="${a}"/>` +
    `<stop offset="1" stop-color="${b}"/></linearGradient></defs><rect width="100%" height="100%" fill="url(#g)"/>` +
    `<text x="50%" y="55%" font-family="sans-serif" font-size="${Math.round(h / 5)}" fill="#fff" text-anchor="middle">${label}</text></svg>`;
  const pics = {
    '/avatar.svg': svg(64, 64, '#ff8a65', '#d84315', 'AK'),
    '/photo.svg': svg(480, 240, '#4ba5c3', '#3e4fa3', 'photo'),
    '/preview.svg': svg(320, 160, '#64a513', '#2e7d32', 'preview'),
    '/icon.svg': svg(32, 32, '#8474c8', '#4a148c', '★'),
    '/inline.svg': svg(200, 100, '#e39b00', '#c62828', 'img'),
  };
  const srv = createServer((req, res) => {
    const body = pics[req.url.split('?')[0]];
    res.writeHead(body ? 200 : 404, { 'content-type': 'image/svg+xml' });
    res.end(body || '');
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  return { base: `http://127.0.0.1:${srv.address().port}`, close: () => new Promise((r) => srv.close(r)) };
}
