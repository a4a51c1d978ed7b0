// Opens a signed viewer link in Debian's Chromium and reports what the viewer fetched.
//
// Run by tests/auth/test_viewer_link.py with `node viewer_link.mjs URL SCREENSHOT [FIRST]`,
// where URL is the link `dicomweb sign` printed for a server running with --auth oauth2.
// FIRST, JSON {"root": ORIGIN, "issuer": URL or null}, asks for the study list at ORIGIN/
// to be opened first without a credential: with an issuer, until the viewer leaves for
// the issuer's authorization endpoint (its login); without, until the server has answered
// the study search. Uses playwright-core from tests/viewer/node_modules. Prints one JSON
// report on its last line; the Python test checks it.

import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(join(here, '..', 'viewer', 'package.json'));
const { chromium } = require('playwright-core');

const [url, screenshot, first] = process.argv.slice(2);
const report = { responses: [], pageErrors: [], finalUrl: null, pixels: false, studyList: null };
const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
});
async function studyListWithoutCredential({ root, issuer }) {
  const page = await browser.newPage({ viewport: { width: 1200, height: 800 } });
  const seen = { searches: [], authorization: null, rows: null };
  page.on('response', (response) => {
    const path = new URL(response.url()).pathname;
    if (path.startsWith('/dicomweb/')) {
      seen.searches.push({
        path,
        status: response.status(),
        authorization: response.request().headers()['authorization'] || null,
      });
    }
  });
  if (issuer) {
    // The page itself leaves for the issuer (its discovery document is only fetched).
    const login = page.waitForRequest(
      (request) => request.isNavigationRequest() && request.url().startsWith(issuer),
      { timeout: 60_000 },
    );
    await page.goto(`${root}/`);
    const request = await login;
    const address = new URL(request.url());
    seen.authorization = {
      path: address.pathname,
      params: Object.fromEntries(address.searchParams),
    };
  } else {
    await page.goto(`${root}/`);
    await page.waitForResponse((response) => new URL(response.url()).pathname === '/dicomweb/studies', {
      timeout: 60_000,
    });
    await page.waitForTimeout(2000);
    seen.text = await page.evaluate(() => document.body.innerText);
  }
  await page.close();
  return seen;
}

try {
  if (first) report.studyList = await studyListWithoutCredential(JSON.parse(first));
  const page = await browser.newPage({ viewport: { width: 1200, height: 800 } });
  page.on('pageerror', (error) => report.pageErrors.push(String(error)));
  page.on('response', (response) => {
    const request = response.request();
    const path = new URL(response.url()).pathname;
    if (path.startsWith('/dicomweb/') || path === '/wado') {
      report.responses.push({
        path,
        status: response.status(),
        bearer: (request.headers()['authorization'] || '').startsWith('Bearer dwl1.'),
      });
    }
  });
  await page.goto(url);
  // The viewer drew something: a canvas with pixels that are not all black.
  await page.waitForFunction(
    () =>
      [...document.querySelectorAll('canvas')].some((canvas) => {
        if (canvas.width < 64 || canvas.height < 64) return false;
        const copy = document.createElement('canvas');
        copy.width = canvas.width;
        copy.height = canvas.height;
        const context = copy.getContext('2d');
        context.drawImage(canvas, 0, 0);
        const data = context.getImageData(0, 0, copy.width, copy.height).data;
        for (let i = 0; i < data.length; i += 4 * 97) if (data[i] > 40) return true;
        return false;
      }),
    null,
    { timeout: 60_000 },
  );
  report.pixels = true;
  await page.waitForTimeout(1000);
  report.finalUrl = page.url();
  await page.screenshot({ path: screenshot });
} catch (error) {
  report.error = String(error);
} finally {
  await browser.close();
}
console.log(JSON.stringify(report));
