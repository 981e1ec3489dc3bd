// Measures the time from the REST answer of im.notify.system.add to the item on the page, over
// 100 notifications, and prints the median and the worst. Needs GET /events.
//   node tests/browser/latency.mjs [count]
import { startServer, launch, signedIn, rest, requireEvents } from './harness.mjs';

const count = Number(process.argv[2] || 100);
// The rate limit would otherwise throttle 100 back-to-back adds from one webhook.
const server = await startServer({ IMNOTIFY_LIMITS__RATE__ENABLED: 'false' });
const browser = await launch();
try {
  const { context, page } = await signedIn(browser, server);
  await requireEvents(context, server);
  await page.waitForSelector('#status.on', { timeout: 5000 });
  await page.evaluate(() => {
    window.__seen = {};
    new MutationObserver((records) => {
      const now = Date.now();
      for (const r of records) for (const n of r.addedNodes) if (n.id && n.id.startsWith('n-')) window.__seen[n.dataset.id] = now;
    }).observe(document.getElementById('list'), { childList: true });
  });
  const times = [];
  const fromSend = [];
  for (let i = 0; i < count; i++) {
    const sent = Date.now();
    const id = await rest(server, 'im.notify.system.add', { USER_ID: 1, MESSAGE: `latency ${i} [b]bold[/b]` });
    const answered = Date.now();
    await page.waitForSelector(`#n-${id}`, { state: 'attached', timeout: 10000 });
    const seen = await page.evaluate((x) => window.__seen[x], id);
    times.push(seen - answered);
    fromSend.push(seen - sent);
  }
  // Negative: the event reached the page before the REST answer reached this script.
  const report = (label, xs) => {
    xs.sort((a, b) => a - b);
    console.log(`${label}, ${count} notifications: median ${xs[Math.floor(xs.length / 2)]} ms, ` +
      `worst ${xs[xs.length - 1]} ms, best ${xs[0]} ms`);
  };
  report('REST answer -> item on the page', times);
  report('REST request sent -> item on the page', fromSend);
} finally {
  await browser.close();
  await server.stop();
}
