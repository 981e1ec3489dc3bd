import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch, signedIn, rest, sql, badge, unixNow } from './harness.mjs';

let server, browser;
before(async () => { server = await startServer(); browser = await launch(); });
after(async () => { await browser?.close(); await server?.stop(); });

test('confirm buttons and the answer field work from the page', async () => {
  const cid = sql(server, "INSERT INTO notifications (user_id, author_id, notify_type, text, buttons, created_at) " +
    "VALUES (1, 0, 1, 'Join the group?', '[{\"TITLE\":\"Accept\",\"VALUE\":\"Y\",\"TYPE\":\"accept\"},{\"TITLE\":\"Decline\",\"VALUE\":\"N\"}]', " +
    `${unixNow()}) RETURNING id`);
  const aid = await rest(server, 'im.notify.system.add', { USER_ID: 1, MESSAGE: 'Please answer' });
  const { context, page } = await signedIn(browser, server);
  const item = page.locator(`#n-${cid}`);
  await item.getByRole('button', { name: 'Accept' }).click();
  await item.waitFor({ state: 'detached' });
  assert.equal(sql(server, `SELECT COUNT(*) FROM notifications WHERE id = ${cid}`), '0');
  await expectLive(page, /Your selection: "Accept"/);

  const other = page.locator(`#n-${aid}`);
  await other.locator('details.reply summary').click();
  await other.locator('input[name=text]').fill('On my way');
  await other.getByRole('button', { name: 'Send' }).click();
  await expectLive(page, /Your reply has been sent/);
  await context.close();
});

test('without JS the forms still work (read, delete) and need the CSRF token', async () => {
  const id = await rest(server, 'im.notify.system.add', { USER_ID: 1, MESSAGE: 'No script here' });
  const { context, page } = await signedIn(browser, server, { javaScriptEnabled: false });
  const before = await badge(page);
  await Promise.all([page.waitForNavigation(), page.locator(`#n-${id} button[value=read]`).click()]);
  assert.equal(await badge(page), before - 1);
  assert.ok(await page.locator(`#n-${id}.read`).count());
  await Promise.all([page.waitForNavigation(), page.locator(`#n-${id} button[value=delete]`).click()]);
  assert.equal(await page.locator(`#n-${id}`).count(), 0);
  const cookies = (await context.cookies()).map((c) => `${c.name}=${c.value}`).join('; ');
  const forged = await fetch(`${server.base}/center/action`, {
    method: 'POST', redirect: 'manual',
    headers: { cookie: cookies, 'content-type': 'application/x-www-form-urlencoded' },
    body: 'action=read_all&csrf=wrong',
  });
  assert.equal(forged.status, 401);
  await context.close();
});

async function expectLive(page, re) {
  // Not waitForFunction: it evaluates strings, which the page's CSP (rightly) forbids.
  await page.locator('#live').filter({ hasText: re }).waitFor({ state: 'attached', timeout: 5000 });
}
