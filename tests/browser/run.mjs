// Drives examples/frontend in headless Chromium for tests/browser.rs, over stdin/stdout lines:
//
//   → origin <page origin>            the page is served (on its own port: another origin)
//   ← open <api base> <token>         load the page with that API and token
//   → ready <track> <percent> …       every listed track shows, with its stream open
//   ← expect <track> <percent>        wait for that track's bar to show it
//   → saw <track> <percent>
//   ← done                            check the page never reloaded, keep a screenshot
//   → screenshot <path>
//
// Anything unexpected prints `fail <reason>` and exits 1. CHROMIUM is the browser binary,
// SCREENSHOT where the picture goes; nothing is downloaded.

import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { dirname, extname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const PAGE_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'examples', 'frontend');
const WAIT_MS = 30_000;
const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css' };

const say = (line) => process.stdout.write(`${line}\n`);
const fail = (reason) => {
  say(`fail ${reason}`.replace(/\n/g, ' '));
  process.exit(1);
};

const server = createServer(async (request, response) => {
  const path = normalize(new URL(request.url, 'http://page').pathname).replace(/^\/+/, '');
  try {
    const body = await readFile(join(PAGE_DIR, path || 'index.html'));
    response.writeHead(200, { 'content-type': TYPES[extname(path || '.html')] ?? 'text/plain' });
    response.end(body);
  } catch {
    response.writeHead(404).end();
  }
});
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const origin = `http://127.0.0.1:${server.address().port}`;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM,
  headless: true,
  args: ['--headless', '--no-sandbox'],
});
const page = await browser.newPage({ viewport: { width: 900, height: 700 } });
page.on('console', (message) => process.stderr.write(`page: ${message.text()}\n`));
page.on('pageerror', (error) => process.stderr.write(`page error: ${error}\n`));

const bar = (track) => `[data-track="${track}"] [role=progressbar]`;
const percentOf = (track) =>
  page.locator(bar(track)).getAttribute('aria-valuenow', { timeout: 1000 }).catch(() => null);

say(`origin ${origin}`);
const lines = createInterface({ input: process.stdin });
try {
  for await (const line of lines) {
    const [command, ...args] = line.trim().split(/\s+/);
    if (command === 'open') {
      const [api, token, ...tracks] = args;
      const query = new URLSearchParams({ api, token });
      await page.goto(`${origin}/index.html?${query}`);
      // set once: still there at the end only if the page never reloaded
      await page.evaluate(() => { window.loadedOnce = true; });
      for (const track of tracks) {
        await page.waitForSelector(`[data-track="${track}"][data-live="true"]`, { timeout: WAIT_MS });
      }
      const percents = await Promise.all(tracks.map(async (t) => `${t} ${await percentOf(t)}`));
      say(`ready ${percents.join(' ')}`);
    } else if (command === 'expect') {
      const [track, percent] = args;
      try {
        await page.waitForFunction(
          ([selector, want]) => document.querySelector(selector)?.getAttribute('aria-valuenow') === want,
          [bar(track), percent],
          { timeout: WAIT_MS },
        );
      } catch {
        fail(`track ${track} showed ${await percentOf(track)}%, not ${percent}%, within ${WAIT_MS} ms`);
      }
      say(`saw ${track} ${percent}`);
    } else if (command === 'done') {
      if (!(await page.evaluate(() => window.loadedOnce === true))) fail('the page reloaded');
      // the bars ease into place: picture them once they are there
      await page.waitForFunction(() => document.getAnimations().every((a) => a.playState !== 'running'));
      const path = process.env.SCREENSHOT;
      await page.screenshot({ path, fullPage: true });
      say(`screenshot ${path}`);
      break;
    } else {
      fail(`unknown command ${line}`);
    }
  }
} catch (error) {
  fail(error.stack ?? String(error));
} finally {
  await browser.close();
  server.close();
}
