// An XSS corpus in MESSAGE, in BB-code arguments and in every ATTACH field must render inert:
// no dialog, no script run, no injected element, no javascript: link, no CSP violation.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch, signedIn, rest } from './harness.mjs';

let server, browser;
before(async () => { server = await startServer(); browser = await launch(); });
after(async () => { await browser?.close(); await server?.stop(); });

const P = 'window.__pwned=1;alert(1)';
export const CORPUS = [
  `<script>${P}</script>`,
  `<img src=x onerror="${P}">`,
  `"><svg onload="${P}">`,
  `'><iframe src="javascript:${P}"></iframe>`,
  `<a href="javascript:${P}">link</a>`,
  `<style>body{display:none}</style>`,
  `javascript:${P}`,
  `[url=javascript:${P}]url-arg[/url]`,
  `[url=JaVaScRiPt:${P}]url-case[/url]`,
  `[url=java\tscript:${P}]url-tab[/url]`,
  `[url]javascript:${P}[/url]`,
  `[url=" onmouseover="${P}]url-quote[/url]`,
  `[url=https://ok.example/" onmouseover="${P}]url-attr[/url]`,
  `[img size=small]javascript:${P} [/img]`,
  `[img size=small]https://x.example/a.png" onerror="${P} [/img]`,
  `[color=red" onmouseover="${P}]color[/color]`,
  `[color=#fff;background:url(javascript:x)]color2[/color]`,
  `[size=12" onclick="${P}]size[/size]`,
  `[icon=javascript:${P} title=x]`,
  `[icon=https://x.example/i.png title="><script>${P}</script>]`,
  `[user=1"><b>inject</b>]user[/user]`,
  `[put="><img src=x onerror="${P}">]put[/put]`,
  `[send=</span><script>${P}</script>]send[/send]`,
  `[call=javascript:${P}]call[/call]`,
  `[chat="><svg onload=${P}>]chat[/chat]`,
  `[timestamp=1 format="><script>${P}</script>]`,
  `[code]</code></pre><script>${P}</script>[/code]`,
];

function attachWith(x, url) {
  return {
    COLOR: x, DESCRIPTION: x,
    BLOCKS: [
      { MESSAGE: x },
      { USER: { NAME: x, AVATAR: url, LINK: url, USER_ID: 0 } },
      { LINK: { NAME: x, LINK: url, DESC: x, HTML: x, PREVIEW: url, WIDTH: x, HEIGHT: x } },
      { RICH_LINK: { NAME: x, LINK: url, DESC: x, HTML: x, EXTRA_IMAGE: url } },
      { IMAGE: { NAME: x, LINK: url, PREVIEW: url, WIDTH: x, HEIGHT: x } },
      { FILE: { NAME: x, LINK: url, SIZE: x } },
      { GRID: ['BLOCK', 'LINE', 'ROW', 'TABLE', x].map((d) => ({ DISPLAY: d, NAME: x, VALUE: x, COLOR: x, LINK: url, WIDTH: x })) },
      { DELIMITER: { SIZE: x, COLOR: x } },
    ],
  };
}

const URLS = [`javascript:${P}`, `https://x.example/"onmouseover="${P}`, `/rel"><script>${P}</script>`,
  `http://x.example/'><img src=x onerror=${P}>`];

const ALLOWED = new Set(['LI', 'ARTICLE', 'HEADER', 'SPAN', 'TIME', 'DIV', 'STRONG', 'EM', 'U', 'S', 'A', 'BR', 'IMG',
  'PRE', 'CODE', 'BLOCKQUOTE', 'P', 'FIGURE', 'FIGCAPTION', 'HR', 'FORM', 'INPUT', 'BUTTON', 'DETAILS', 'SUMMARY', 'LABEL']);

async function assertInert(page) {
  const found = await page.evaluate((allowed) => {
    const bad = [];
    if (window.__pwned) bad.push('a script ran');
    for (const el of document.querySelectorAll('#list *')) {
      if (!allowed.includes(el.tagName)) bad.push('element ' + el.tagName);
      for (const a of el.attributes) {
        if (/^on/i.test(a.name)) bad.push(`attribute ${a.name} on ${el.tagName}`);
      }
      if (el.tagName === 'A') {
        const href = (el.getAttribute('href') || '').replace(/[\u0000-\u0020]/g, '').toLowerCase();
        if (!/^(https?:|mailto:|tel:|\/|\.|#|\?|[^:]*$)/.test(href)) bad.push('link ' + href);
        if (el.protocol === 'javascript:') bad.push('javascript link ' + el.href);
      }
      if (el.tagName === 'IMG' && !/^https?:/i.test(el.getAttribute('src') || '')) bad.push('image ' + el.getAttribute('src'));
    }
    if (document.querySelector('script:not([src="/assets/center.js"])')) bad.push('an extra script element');
    if (document.querySelectorAll('style, iframe, svg, object, embed').length) bad.push('style/iframe/svg/object/embed');
    return bad;
  }, [...ALLOWED]);
  assert.deepEqual(found, []);
  // Hovering and clicking every link must not run anything either.
  for (const a of await page.locator('#list a').all()) {
    await a.hover({ timeout: 1000 }).catch(() => {});
  }
  assert.equal(await page.evaluate(() => window.__pwned), undefined);
}

test('an XSS corpus in MESSAGE, BB-code arguments and every ATTACH field renders inert', async () => {
  const { context, page } = await signedIn(browser, server);
  const dialogs = [];
  const violations = [];
  page.on('dialog', (d) => { dialogs.push(d.message()); d.dismiss(); });
  page.on('console', (m) => { if (/Content Security Policy/i.test(m.text())) violations.push(m.text()); });
  // In chunks smaller than a page, so every item is on the first page.
  for (let start = 0; start < CORPUS.length; start += 10) {
    const ids = [];
    for (let i = start; i < Math.min(start + 10, CORPUS.length); i++) {
      const x = CORPUS[i];
      ids.push(await rest(server, 'im.notify.system.add', { USER_ID: 1, MESSAGE: `#${i} ${x}`, ATTACH: attachWith(x, URLS[i % URLS.length]) }));
    }
    await page.reload();
    for (const id of ids) assert.equal(await page.locator(`#n-${id}`).count(), 1, `item ${id} shown`);
    // The text is shown, not dropped: the corpus appears as visible characters.
    assert.match(await page.locator(`#n-${ids[0]} .text`).innerText(), new RegExp(`^#${start} `));
    await assertInert(page);

    // The same through the fragment the live script inserts.
    await page.evaluate(async (list) => {
      for (const id of list) {
        const html = await (await fetch('/center/item/' + id)).text();
        const t = document.createElement('template');
        t.innerHTML = html;
        document.getElementById('list').append(t.content.firstElementChild);
      }
    }, ids);
    await assertInert(page);
  }
  assert.match(await page.content(), /&lt;script&gt;window.__pwned=1;alert\(1\)&lt;\/script&gt;/);
  assert.deepEqual(dialogs, []);
  assert.deepEqual(violations, []);
  await context.close();
});
