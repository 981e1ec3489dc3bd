import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch, signedIn, rest, PASSWORD } from './harness.mjs';

let server, browser;
before(async () => { server = await startServer(); browser = await launch(); });
after(async () => { await browser?.close(); await server?.stop(); });

test('without a session / redirects to the login page, which signs in and comes back', async () => {
  const r = await fetch(`${server.base}/`, { redirect: 'manual' });
  assert.equal(r.status, 303);
  assert.equal(r.headers.get('location'), '/login?next=/');
  await rest(server, 'im.notify.system.add', { USER_ID: 1, MESSAGE: 'Hello [b]world[/b]' });
  const { context, page } = await signedIn(browser, server);
  assert.equal(new URL(page.url()).pathname, '/');
  assert.match(await page.locator('.item .text').first().innerHTML(), /Hello <strong>world<\/strong>/);
  assert.equal(await page.title(), '(1) Notifications');
  await context.close();
});

test('the page is served with a strict CSP, no framing and a referrer policy', async () => {
  const { context, page } = await signedIn(browser, server);
  const resp = await page.reload();
  const h = resp.headers();
  assert.match(h['content-security-policy'], /script-src 'self';/);
  assert.match(h['content-security-policy'], /style-src 'self';/);
  assert.match(h['content-security-policy'], /frame-ancestors 'none'/);
  assert.equal(h['x-frame-options'], 'DENY');
  assert.ok(h['referrer-policy']);
  await context.close();
});

test('a wrong password stays on the login page; Russian by Accept-Language and by the switch', async () => {
  const context = await browser.newContext({ locale: 'ru-RU' });
  const page = await context.newPage();
  await page.goto(`${server.base}/`);
  await page.fill('input[name=login]', '1');
  await page.fill('input[name=password]', 'wrong');
  await page.click('button[type=submit]');
  assert.match(await page.content(), /Wrong user or password/);
  await page.fill('input[name=login]', '1');
  await page.fill('input[name=password]', PASSWORD);
  await Promise.all([page.waitForURL(`${server.base}/`), page.click('button[type=submit]')]);
  assert.match(await page.locator('h1').first().innerText(), /^Уведомления/);
  await page.click('.settings summary');
  await page.selectOption('select[name=lang]', 'en');
  await Promise.all([page.waitForNavigation(), page.click('.settings form button[type=submit]')]);
  assert.equal(await page.evaluate(() => document.documentElement.lang), 'en');
  await context.close();
});
