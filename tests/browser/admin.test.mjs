// The test-server toolkit's admin page (/admin/, issue 16) in chromium: only an admin's session
// gets it; the journal shows a call live (the page's script) and filters by method and status;
// a fault is added and removed through the forms; a captured mail is shown; users, webhooks and
// apps are listed; and the page runs under a CSP with no inline code.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch, signedIn, rest } from './harness.mjs';

const TOKEN = 'browser-admin-token-0123456789';
let server, browser;
before(async () => {
  server = await startServer({ IMNOTIFY_ADMIN__TOKEN: TOKEN, IMNOTIFY_EMAIL__CAPTURE: 'true' });
  server.cli('user', 'add', '--id', '2', '--name', 'Boris', '--email', 'boris@example.org',
    '--password', 'not-an-admin-pw');
  server.cli('app', 'add', '--name', 'CI app', '--scope', 'im', '--client-id', 'local.browser',
    '--client-secret', 'browser-client-secret-1');
  browser = await launch();
});
after(async () => { await browser?.close(); await server?.stop(); });

async function admin(method, path, body) {
  const r = await fetch(`${server.base}/admin/api${path}`, {
    method, headers: { Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  assert.ok(r.ok, `${method} ${path}: ${r.status}`);
  return r.json();
}

/** The text of every cell of a section's table (the table right after its heading). */
async function rows(page, heading) {
  return page.locator(`h2:has-text("${heading}") + table tbody tr`).evaluateAll(
    (trs) => trs.map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent)));
}

test('a non-admin session is refused', async () => {
  const context = await browser.newContext({ locale: 'en-US' });
  const page = await context.newPage();
  await page.goto(`${server.base}/`);
  await page.fill('input[name=login]', '2');
  await page.fill('input[name=password]', 'not-an-admin-pw');
  await Promise.all([page.waitForURL(`${server.base}/`), page.click('button[type=submit]')]);
  const resp = await page.goto(`${server.base}/admin/`);
  assert.equal(resp.status(), 403);
  assert.match(await page.content(), /for admin users/);
  assert.equal(await page.locator('#journal-body').count(), 0);
  // And without any session, the sign-in page.
  const r = await fetch(`${server.base}/admin/`, { redirect: 'manual' });
  assert.equal(r.status, 303);
  assert.equal(r.headers.get('location'), '/login?next=/admin/');
  await context.close();
});

test('the page has a CSP without inline code, and nothing inline runs or styles', async () => {
  const { context, page } = await signedIn(browser, server);
  const violations = [];
  page.on('console', (m) => { if (/Content Security Policy/i.test(m.text())) violations.push(m.text()); });
  const resp = await page.goto(`${server.base}/admin/`);
  assert.equal(resp.status(), 200);
  const csp = resp.headers()['content-security-policy'];
  assert.match(csp, /default-src 'none'/);
  assert.match(csp, /script-src 'self'/);
  assert.match(csp, /style-src 'self'/);
  assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
  assert.equal(resp.headers()['x-frame-options'], 'DENY');
  const scripts = await page.locator('script').evaluateAll((s) => s.map((x) => [x.getAttribute('src'), x.textContent]));
  assert.deepEqual(scripts, [['/admin/admin.js', '']]);
  assert.equal(await page.locator('style').count(), 0);
  assert.equal(await page.locator('[style]').count(), 0);
  const handlers = await page.evaluate(() => [...document.querySelectorAll('*')]
    .flatMap((el) => [...el.attributes].map((a) => a.name)).filter((n) => n.startsWith('on')));
  assert.deepEqual(handlers, []);
  // The stylesheet did load (the CSP lets 'self' through).
  assert.notEqual(await page.evaluate(() => getComputedStyle(document.body).margin), '0px');
  assert.deepEqual(violations, []);
  await context.close();
});

test('the journal shows a call live and filters by method and status', async () => {
  const { context, page } = await signedIn(browser, server);
  await page.goto(`${server.base}/admin/`);
  const marker = `live call ${Date.now()}`;
  await rest(server, 'im.notify.system.add', { USER_ID: 1, MESSAGE: marker });
  // No reload: the page's script refreshes the table every two seconds.
  await page.locator('#journal-body tr', { hasText: marker }).first().waitFor({ timeout: 15000 });
  // A failing call (no MESSAGE) and a different method.
  const bad = await fetch(`${server.hook}im.notify.system.add.json`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ USER_ID: 1 }),
  });
  assert.equal(bad.status, 400);
  await rest(server, 'im.notify.get', {});
  await page.locator('#journal-body tr', { hasText: 'im.notify.get' }).first().waitFor({ timeout: 15000 });

  await page.fill('#journal-filter input[name=method]', 'im.notify.system.add');
  await page.fill('#journal-filter input[name=status]', '400');
  await Promise.all([page.waitForNavigation(), page.click('#journal-filter button')]);
  const only400 = await page.locator('#journal-body tr').evaluateAll(
    (trs) => trs.map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent)));
  assert.ok(only400.length >= 1);
  for (const r of only400) {
    assert.equal(r[2], 'im.notify.system.add');
    assert.equal(r[3], '400');
  }
  // The live refresh keeps the filter.
  await rest(server, 'im.notify.system.add', { USER_ID: 1, MESSAGE: 'not a 400' });
  await page.waitForTimeout(3000);
  const still = await page.locator('#journal-body tr').evaluateAll(
    (trs) => trs.map((tr) => tr.querySelectorAll('td')[3].textContent));
  assert.ok(still.length >= 1 && still.every((s) => s === '400'), JSON.stringify(still));
  await context.close();
});

test('a fault is added and removed through the forms', async () => {
  const { context, page } = await signedIn(browser, server);
  await page.goto(`${server.base}/admin/`);
  const form = page.locator('form:has(input[name=action][value=add])');
  await form.locator('input[name=method]').fill('im.notify.system.add');
  await form.locator('input[name=error]').fill('INTERNAL_SERVER_ERROR');
  await form.locator('input[name=times]').fill('1');
  await Promise.all([page.waitForNavigation(), form.locator('button').click()]);
  let faults = await rows(page, 'Faults');
  assert.equal(faults.length, 1);
  assert.equal(faults[0][1], 'im.notify.system.add');
  assert.equal(faults[0][2], 'INTERNAL_SERVER_ERROR');
  // It is live: the next call fails as the server would fail it.
  const r = await fetch(`${server.hook}im.notify.system.add.json`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ USER_ID: 1, MESSAGE: 'x' }),
  });
  assert.equal(r.status, 500);
  assert.equal((await r.json()).error, 'INTERNAL_SERVER_ERROR');
  await page.reload();
  faults = await rows(page, 'Faults');
  assert.equal(faults[0][8], '1'); // hits
  await Promise.all([page.waitForNavigation(),
    page.locator('h2:has-text("Faults") + table tbody tr button').first().click()]);
  assert.deepEqual(await rows(page, 'Faults'), []);
  assert.deepEqual((await admin('GET', '/faults')).faults, []);
  await context.close();
});

test('a captured mail is shown, and users, webhooks and apps are listed', async () => {
  await rest(server, 'im.notify.system.add', { USER_ID: 2, MESSAGE: 'Deploy [b]done[/b]' });
  await admin('POST', '/clock', { advance_seconds: 601 });
  for (let i = 0; i < 50 && (await admin('GET', '/mail')).mail.length === 0; i++) {
    await new Promise((r) => setTimeout(r, 200));
  }
  const { context, page } = await signedIn(browser, server);
  await page.goto(`${server.base}/admin/`);
  const mail = page.locator('#mail tbody tr.mail').first();
  assert.match(await mail.locator('td').nth(2).textContent(), /boris@example\.org/);
  assert.equal(await mail.locator('td.subject').textContent(), 'System notification: Deploy done');
  assert.match(await mail.locator('pre.text').textContent(), /Deploy done/);
  // The HTML part is shown as its source text, not as markup of the page.
  await mail.locator('details').nth(1).locator('summary').click();
  assert.match(await mail.locator('pre.html').textContent(), /<strong>done<\/strong>/);
  assert.equal(await page.locator('#mail strong').count(), 0);

  const users = await rows(page, 'Users');
  assert.deepEqual(users.map((u) => u[0]), ['1', '2']);
  assert.match(users[1][1], /Boris/);
  const hooks = await rows(page, 'Webhooks');
  assert.ok(hooks.some((h) => h[1] === '1' && h[2] === 'im'), JSON.stringify(hooks));
  const apps = await rows(page, 'Apps');
  assert.ok(apps.some((a) => a[0] === 'local.browser' && a[1] === 'CI app'), JSON.stringify(apps));
  await admin('DELETE', '/clock');
  await context.close();
});
