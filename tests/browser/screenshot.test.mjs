// A rich notification (BB codes plus every ATTACH block) rendered and kept as a screenshot in
// target/artifacts/ (CI keeps it as an artifact).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { startServer, launch, signedIn, rest, imageServer, ARTIFACTS } from './harness.mjs';

let server, browser, images;
before(async () => { server = await startServer(); browser = await launch(); images = await imageServer(); });
after(async () => { await browser?.close(); await server?.stop(); await images?.close(); });

export function richNotification(img) {
  return {
    USER_ID: 1,
    MESSAGE: '[b]Deploy finished[/b] for [url=https://ci.example/run/42]run #42[/url] by [user=1]someone[/user].[br]' +
      '[i]Italic[/i], [u]underline[/u], [s]strike[/s], [color=#c62828]red[/color], [size=20]big[/size], ' +
      '[icon=' + img + '/icon.svg size=20 title=Star] icon, [put=/status]put a command[/put], [send=yes]send yes[/send], ' +
      '[call=+1 555 0100]call us[/call], [chat=12]a chat[/chat], [timestamp=1764410400 format=SHORT_DATE_FORMAT], [disk=7].\n' +
      '>>A quoted line\n' +
      '[code]cargo test --release[/code]' +
      '[img size=small]' + img + '/inline.svg [/img]',
    ATTACH: {
      COLOR: '#2f6fe4',
      DESCRIPTION: 'Build summary',
      BLOCKS: [
        { MESSAGE: 'Attachment text with [b]BB codes[/b] and a [url=https://example.com]link[/url]' },
        { USER: { NAME: 'Anna Kuznetsova', AVATAR: img + '/avatar.svg', LINK: 'https://example.com/anna' } },
        { LINK: { NAME: 'Release notes', LINK: 'https://example.com/notes', DESC: 'What changed in 1.4', PREVIEW: img + '/preview.svg', WIDTH: 160, HEIGHT: 80 } },
        { LINK: { NAME: 'Raw HTML link', LINK: 'https://example.com/html', HTML: '<b>shown as text</b>' } },
        { RICH_LINK: { NAME: 'Rich link', LINK: 'https://example.com/rich', DESC: 'With an extra image', EXTRA_IMAGE: img + '/preview.svg' } },
        { DELIMITER: { SIZE: 300, COLOR: '#c6c6c6' } },
        { IMAGE: { NAME: 'Screenshot', LINK: img + '/photo.svg', WIDTH: 240, HEIGHT: 120 } },
        { FILE: { NAME: 'build-log.txt', LINK: 'https://example.com/log.txt', SIZE: 123456 } },
        { GRID: [
          { DISPLAY: 'LINE', NAME: 'Status', VALUE: 'Passed', COLOR: '#2e7d32' },
          { DISPLAY: 'LINE', NAME: 'Duration', VALUE: '4 min 12 s' },
          { DISPLAY: 'BLOCK', NAME: 'Branch', VALUE: '[b]main[/b]' },
          { DISPLAY: 'ROW', NAME: 'Commit', VALUE: '6637367', LINK: 'https://example.com/c/6637367' },
          { DISPLAY: 'TABLE', NAME: 'Tests', VALUE: '1 204 passed' },
          { DISPLAY: 'TABLE', NAME: 'Coverage', VALUE: '87 %', COLOR: '#e39b00' },
        ] },
      ],
    },
  };
}

test('a rich notification is rendered with every block, and kept as a screenshot', async () => {
  await rest(server, 'im.notify.system.add', { USER_ID: 1, MESSAGE: 'An older, plain notification' });
  const id = await rest(server, 'im.notify.system.add', richNotification(images.base));
  const { context, page } = await signedIn(browser, server, { viewport: { width: 900, height: 1400 } });
  const item = page.locator(`#n-${id}`);
  for (const sel of ['.text strong', '.text em', '.text u', '.text s', '.bb-color', '.bb-size-20', '.bb-icon', '.bb-cmd',
    '.bb-call', '.bb-chat', '.bb-time', '.bb-disk', '.bb-quote', '.bb-code', '.bb-img', '.at-desc', '.at-message',
    '.at-user .avatar', '.at-link .preview', '.at-html', '.at-link.rich', '.at-image img', '.at-file', '.g-line', '.g-block',
    '.g-row', '.g-table', '.at-delim']) {
    assert.ok(await item.locator(sel).count() > 0, `${sel} rendered`);
  }
  assert.equal(await item.locator('.at-html').innerText(), '<b>shown as text</b>');
  // The colour stripe is the attachment's COLOR, applied under the CSP by the script.
  assert.equal(await item.locator('.attach').evaluate((e) => getComputedStyle(e).borderLeftColor), 'rgb(47, 111, 228)');
  await page.waitForFunction(() => [...document.images].every((i) => i.complete), null, { timeout: 5000 }).catch(() => {});
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, 'center-rich.png'), fullPage: true });
  await page.setViewportSize({ width: 390, height: 844 });
  await page.screenshot({ path: join(ARTIFACTS, 'center-rich-phone.png'), fullPage: true });
  await context.close();
});
