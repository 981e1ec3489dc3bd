// Measures the time from the REST answer of im.notify.system.add to the item on the page, over
// 100 notifications, and prints the median and the worst. Needs GET /events.
//   node tests/browser/latency.mjs [count]
import { startServer, launch, signedIn, rest, requireEvents } from './harness.mjs';

const count = Number(process.argv[2] || 100);
const server = await startServer();
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
  for (let i = 0; i < count; i++) {
    const id = await rest(server, 'im.notify.system.add', { USER_ID: 1, MESSAGE: `latency ${i} [b]bold[/b]` });
    const answered = Date.now();
    await page.waitForSelector(`#n-${id}`, { state: 'attached', timeout: 10000 });
    const seen = await page.evaluate((x) => window.__seen[x], id);
    times.push(seen - answered);
  }
  times.sort((a, b) => a - b);
  const median = times[Math.floor(times.length / 2)];
  console.log(`REST answer -> item on the page, ${count} notifications: median ${median} ms, worst ${times[times.length - 1]} ms, best ${times[0]} ms`);
} finally {
  await browser.close();
  await server.stop();
}
