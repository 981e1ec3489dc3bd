// The live parts: they need GET /events (server-sent events, delivery branch). Without it every
// test here fails at once with a message that says so.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch, signedIn, signIn, rest, badge, waitItem, requireEvents } from './harness.mjs';

let server, browser;
before(async () => { server = await startServer(); browser = await launch(); });
after(async () => { await browser?.close(); await server?.stop(); });

async function livePage(options) {
  const s = await signedIn(browser, server, options);
  await requireEvents(s.context, server);
  await s.page.waitForSelector('#status.on', { timeout: 5000 });
  return s;
}

async function ids(page) {
  return page.$$eval('#list > li[id]', (els) => els.map((e) => Number(e.dataset.id)));
}

test('a notification sent over REST appears live, and a delete made elsewhere removes it', async () => {
  const { context, page } = await livePage();
  const started = Date.now();
  const id = await rest(server, 'im.notify.system.add', { USER_ID: 1, MESSAGE: 'Live [b]now[/b]' });
  await waitItem(page, id, 3000);
  const took = Date.now() - started;
  console.log(`# REST add to item on the page: ${took} ms`);
  assert.match(await page.locator(`#n-${id} .text`).innerHTML(), /Live <strong>now<\/strong>/);
  assert.equal(await badge(page), 1);
  assert.equal(await page.title(), '(1) Notifications');
  assert.match(await page.locator('#live').textContent(), /New notification/);

  await rest(server, 'im.notify.delete', { ID: id });
  await page.locator(`#n-${id}`).waitFor({ state: 'detached', timeout: 3000 });
  await page.waitForFunction(() => document.getElementById('badge').hidden, null, { timeout: 3000 }).catch(() => {});
  assert.equal(await badge(page), 0);
  await context.close();
});

test('a TAG replace swaps the item in place', async () => {
  const { context, page } = await livePage();
  const a = await rest(server, 'im.notify.system.add', { USER_ID: 1, MESSAGE: 'build 1 running', TAG: 'build', CLIENT_ID: 'ci' });
  const b = await rest(server, 'im.notify.system.add', { USER_ID: 1, MESSAGE: 'other B' });
  const c = await rest(server, 'im.notify.system.add', { USER_ID: 1, MESSAGE: 'other C' });
  await waitItem(page, c);
  await waitItem(page, a);
  const before = await ids(page);
  assert.deepEqual(before.slice(0, 3), [c, b, a]);
  const a2 = await rest(server, 'im.notify.system.add', { USER_ID: 1, MESSAGE: 'build 1 passed', TAG: 'build', CLIENT_ID: 'ci' });
  await waitItem(page, a2);
  await page.locator(`#n-${a}`).waitFor({ state: 'detached', timeout: 3000 });
  const after = await ids(page);
  assert.deepEqual(after.slice(0, 3), [c, b, a2], 'the replacement takes the old item\'s place');
  assert.equal(await page.locator('#list > li').count(), before.length, 'no placeholder left behind');
  await context.close();
});

test('mark read, mark all read and delete update the badge, and a second tab follows', async () => {
  const { context, page } = await livePage();
  await rest(server, 'im.notify.read.all', {});
  const tab2 = await context.newPage();
  await tab2.goto(`${server.base}/`);
  await tab2.waitForSelector('#status.on', { timeout: 5000 });
  const n = [];
  for (let i = 0; i < 3; i++) n.push(await rest(server, 'im.notify.system.add', { USER_ID: 1, MESSAGE: `tab test ${i}` }));
  for (const p of [page, tab2]) for (const id of n) await waitItem(p, id);
  const settle = async (p, want) => {
    await p.locator('#badge').filter({ hasText: String(want) }).waitFor({ state: 'attached', timeout: 3000 }).catch(() => {});
    if (want === 0) await p.waitForFunction(() => document.getElementById('badge').hidden, null, { timeout: 3000 }).catch(() => {});
    assert.equal(await badge(p), want);
  };
  await settle(page, 3);
  await settle(tab2, 3);

  await page.locator(`#n-${n[0]} button.toggle`).click();
  await settle(page, 2);
  await settle(tab2, 2);
  await tab2.locator(`#n-${n[0]}.read`).waitFor({ state: 'attached', timeout: 3000 });

  await page.locator(`#n-${n[1]} button[value=delete]`).click();
  await page.locator(`#n-${n[1]}`).waitFor({ state: 'detached', timeout: 3000 });
  await tab2.locator(`#n-${n[1]}`).waitFor({ state: 'detached', timeout: 3000 });
  await settle(tab2, 1);

  // A read made elsewhere (over REST) updates both.
  await rest(server, 'im.notify.read', { ID: n[2], ONLY_CURRENT: 'Y' });
  await page.locator(`#n-${n[2]}.read`).waitFor({ state: 'attached', timeout: 3000 });
  await settle(tab2, 0);
  await rest(server, 'im.notify.read', { ID: n[2], ACTION: 'N', ONLY_CURRENT: 'Y' });
  await settle(page, 1);

  await page.getByRole('button', { name: 'Mark all read' }).click();
  await settle(page, 0);
  await settle(tab2, 0);
  assert.equal(await tab2.title(), 'Notifications');
  await tab2.locator(`#n-${n[2]}.read`).waitFor({ state: 'attached', timeout: 3000 });
  await context.close();
});

test('desktop notifications fire for a background tab once permission is granted', async () => {
  const context = await browser.newContext({ locale: 'en-US', permissions: ['notifications'] });
  await context.addInitScript(() => {
    window.__desktop = [];
    const Real = window.Notification;
    function Hooked(title, opts) { window.__desktop.push({ title, body: opts && opts.body }); return new Real(title, opts); }
    Hooked.requestPermission = Real.requestPermission.bind(Real);
    Object.defineProperty(Hooked, 'permission', { get: () => Real.permission });
    window.Notification = Hooked;
    // Headless pages are always visible; the test says when the tab is in the background.
    Object.defineProperty(Document.prototype, 'hidden', { get: () => !!window.__background, configurable: true });
  });
  const page = await context.newPage();
  await signIn(page, server);
  await requireEvents(context, server);
  await page.waitForSelector('#status.on', { timeout: 5000 });
  assert.match(await page.locator('#desktop-state').textContent(), /Desktop notifications are on/);

  const visible = await rest(server, 'im.notify.system.add', { USER_ID: 1, MESSAGE: 'seen in the tab' });
  await waitItem(page, visible);
  assert.deepEqual(await page.evaluate(() => window.__desktop), [], 'nothing while the tab is visible');

  await page.evaluate(() => { window.__background = true; });
  const hidden = await rest(server, 'im.notify.system.add', { USER_ID: 1, MESSAGE: 'Build [b]failed[/b] on [url=https://ci.example/1]main[/url]' });
  await waitItem(page, hidden);
  const shown = await page.evaluate(() => window.__desktop);
  assert.equal(shown.length, 1);
  assert.equal(shown[0].title, 'System');
  assert.equal(shown[0].body, 'Build failed on main (https://ci.example/1)', 'plain text, BB codes removed');
  await context.close();
});
