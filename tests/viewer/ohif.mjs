// Drives Debian's Chromium through the bundled OHIF viewer served by `dicomweb serve`.
//
// Run by tests/viewer/test_ohif.py, which starts the server with sample data and checks
// what this script reports. Usage: node ohif.mjs PLAN.json, where the plan names the
// server's URL, the directory for screenshots and the studies to open. The script
// prints one JSON report on its last line of stdout; it asserts nothing itself, so
// that every check and its message live in the Python test. Progress goes to stderr.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const plan = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const started = Date.now();
const log = (message) =>
  process.stderr.write(`[ohif ${((Date.now() - started) / 1000).toFixed(1)}s] ${message}\n`);

// Without these flags Chromium keeps trying to reach the network (STACK.md).
const FLAGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
const VIEWPORT = { width: 1400, height: 900 };
const TIMEOUT = 60_000;

const report = {
  consoleErrors: [],
  pageErrors: [],
  failedRequests: [],
  errorResponses: [],
  requests: {},
  crossOriginIsolated: null,
  studyList: null,
  studies: [],
  mpr: null,
  performance: null,
};

// Runs in the page before its scripts: counts images Cornerstone has loaded and
// decoded, from the moment OHIF publishes the library as window.cornerstone.
function watchImageLoads() {
  const loaded = new Set();
  const failed = [];
  window.__viewerTest = { loaded, failed, allLoadedAt: null, expected: 0 };
  let library;
  Object.defineProperty(window, 'cornerstone', {
    configurable: true,
    get: () => library,
    set(value) {
      library = value;
      const events = value.EVENTS || value.Enums.Events;
      value.eventTarget.addEventListener(events.IMAGE_LOADED, (event) => {
        loaded.add(event.detail.image.imageId);
        const state = window.__viewerTest;
        if (state.expected && state.allLoadedAt === null && loaded.size >= state.expected) {
          state.allLoadedAt = performance.now();
        }
      });
      value.eventTarget.addEventListener(events.IMAGE_LOAD_FAILED, (event) => {
        failed.push(String(event.detail.imageId));
      });
    },
  });
}

function track(page, context) {
  page.on('console', (message) => {
    if (message.type() === 'error') {
      const url = message.location()?.url ?? '';
      report.consoleErrors.push({ context, url, text: message.text().slice(0, 2000) });
    }
  });
  page.on('pageerror', (error) => report.pageErrors.push({ context, text: String(error) }));
  page.on('requestfailed', (request) =>
    report.failedRequests.push({
      context,
      url: request.url(),
      error: request.failure()?.errorText ?? 'failed',
    }),
  );
  page.on('response', (response) => {
    const request = response.request();
    const url = new URL(response.url());
    if (url.pathname.startsWith('/dicomweb/')) {
      // One entry per kind of request: UIDs, frame numbers and boundaries abstracted.
      const path = (url.pathname + url.search)
        .replace(/[0-9.]{20,}/g, '{uid}')
        .replace(/\/frames\/[0-9,]+/, '/frames/{n}');
      const entry = {
        method: request.method(),
        path,
        accept: request.headers().accept ?? null,
        status: response.status(),
        contentType: (response.headers()['content-type'] ?? '').replace(/ ?boundary=[^;]+;?/, ''),
      };
      const key = JSON.stringify(entry);
      report.requests[key] = (report.requests[key] ?? 0) + 1;
    }
    if (response.status() >= 400) {
      report.errorResponses.push({ context, url: response.url(), status: response.status() });
    }
  });
}

// The viewer's onboarding tour and its investigational-use notice cover the viewport;
// a user dismisses both once (the choice is kept in local storage).
async function dismissOverlays(page) {
  for (const name of ['Skip all', 'Confirm and hide']) {
    const button = page.getByRole('button', { name });
    if (await button.isVisible().catch(() => false)) {
      await button.click().catch(() => {});
    }
  }
}

// Resolves with performance.now() of the first frame in which every one of the first
// `count` viewport canvases shows an image: the pixel at its centre (inside the
// phantom's body) is no longer black.
async function waitForPixels(page, count) {
  return page.evaluate(
    ({ count, timeout }) =>
      new Promise((resolve, reject) => {
        const deadline = performance.now() + timeout;
        const check = () => {
          const canvases = [...document.querySelectorAll('canvas.cornerstone-canvas')].slice(0, count);
          const painted =
            canvases.length === count &&
            canvases.every((canvas) => {
              if (!canvas.width || !canvas.height) return false;
              const context = canvas.getContext('2d', { willReadFrequently: true });
              if (!context) return false;
              const [r, g, b] = context.getImageData(canvas.width >> 1, canvas.height >> 1, 1, 1).data;
              return r + g + b > 30;
            });
          if (painted) resolve(performance.now());
          else if (performance.now() > deadline) reject(new Error(`no image in ${count} viewport(s)`));
          else requestAnimationFrame(check);
        };
        check();
      }),
    { count, timeout: TIMEOUT },
  );
}

async function viewportBoxes(page, count) {
  const boxes = [];
  for (let i = 0; i < count; i += 1) {
    boxes.push(await page.locator('canvas.cornerstone-canvas').nth(i).boundingBox());
  }
  return boxes;
}

async function studyListPage(context) {
  const page = await context.newPage();
  track(page, 'study list');
  log('study list');
  await page.goto(`${plan.url}/`);
  const visible = {};
  for (const study of plan.studies) {
    const row = page.getByText(study.description, { exact: true });
    await row.waitFor({ timeout: TIMEOUT });
    visible[study.description] = await row.isVisible();
  }
  await dismissOverlays(page);
  report.crossOriginIsolated = await page.evaluate(() => window.crossOriginIsolated);
  const screenshot = join(plan.artifacts, 'study-list.png');
  await page.screenshot({ path: screenshot });
  // A click on a study shows its workflows; a click on one opens the viewer.
  const first = plan.studies[0];
  await page.getByText(first.description, { exact: true }).click();
  await page.getByRole('button', { name: 'Basic Viewer' }).click();
  await page.waitForURL(/\/viewer\?/, { timeout: TIMEOUT });
  await waitForPixels(page, 1);
  await dismissOverlays(page);
  const opened = join(plan.artifacts, 'opened-by-click.png');
  await page.screenshot({ path: opened });
  report.studyList = {
    visible,
    screenshot,
    openedByClick: { url: page.url(), screenshot: opened, boxes: await viewportBoxes(page, 1) },
  };
  await page.close();
}

async function openStudy(context, study) {
  const page = await context.newPage();
  track(page, study.name);
  log(`viewer: ${study.description}`);
  await page.goto(`${plan.url}/viewer?StudyInstanceUIDs=${study.uid}`);
  await waitForPixels(page, 1);
  await dismissOverlays(page);
  // Let the last paint settle before the screenshot that the test checks.
  await page.waitForTimeout(300);
  const screenshot = join(plan.artifacts, `viewer-${study.name}.png`);
  await page.screenshot({ path: screenshot });
  report.studies.push({ ...study, screenshot, boxes: await viewportBoxes(page, 1) });
  await page.close();
}

async function openMpr(context, study) {
  const page = await context.newPage();
  track(page, 'mpr');
  log(`MPR: ${study.description}`);
  await page.goto(`${plan.url}/viewer?StudyInstanceUIDs=${study.uid}&hangingprotocolId=mpr`);
  await waitForPixels(page, 3);
  // The reconstruction fills in as slices arrive; the screenshot shows the whole volume.
  await page.waitForFunction(
    () => {
      const volumes = window.cornerstone?.cache?.getVolumes?.() ?? [];
      return volumes.length > 0 && volumes.every((volume) => volume.loadStatus?.loaded);
    },
    null,
    { timeout: TIMEOUT },
  );
  await dismissOverlays(page);
  await page.waitForTimeout(500);
  const screenshot = join(plan.artifacts, 'viewer-mpr.png');
  await page.screenshot({ path: screenshot });
  report.mpr = { screenshot, boxes: await viewportBoxes(page, 3) };
  await page.close();
}

// A fresh context (empty HTTP cache) opens the large series: time from navigation to
// the first image on screen, and to every slice loaded and decoded by Cornerstone.
async function measure(browser, study) {
  const context = await browser.newContext({ viewport: VIEWPORT });
  await context.addInitScript(watchImageLoads);
  const page = await context.newPage();
  track(page, 'performance');
  log(`performance: ${study.description}`);
  await page.goto(`${plan.url}/viewer?StudyInstanceUIDs=${study.uid}`);
  await page.evaluate((expected) => {
    const state = window.__viewerTest;
    state.expected = expected;
    if (state.allLoadedAt === null && state.loaded.size >= expected) {
      state.allLoadedAt = performance.now();
    }
  }, study.slices);
  const firstImage = await waitForPixels(page, 1);
  await page.waitForFunction(() => window.__viewerTest.allLoadedAt !== null, null, {
    timeout: TIMEOUT,
  });
  const state = await page.evaluate(() => {
    // Resource timing splits the time: the viewer's own start-up, then the server.
    const entries = performance.getEntriesByType('resource');
    const first = (part) => entries.find((entry) => entry.name.includes(part));
    return {
      allLoaded: window.__viewerTest.allLoadedAt,
      loaded: window.__viewerTest.loaded.size,
      failed: window.__viewerTest.failed,
      metadataRequested: first('/metadata')?.startTime ?? null,
      metadataReceived: first('/metadata')?.responseEnd ?? null,
      firstFrameRequested: first('/frames/')?.startTime ?? null,
    };
  });
  report.performance = {
    study: study.name,
    slices: study.slices,
    firstImageMs: Math.round(firstImage),
    allSlicesMs: Math.round(state.allLoaded),
    metadataRequestedMs: Math.round(state.metadataRequested),
    metadataReceivedMs: Math.round(state.metadataReceived),
    firstFrameRequestedMs: Math.round(state.firstFrameRequested),
    imagesLoaded: state.loaded,
    imagesFailed: state.failed,
  };
  await context.close();
}

const browser = await chromium.launch({
  executablePath: plan.chromium,
  headless: true,
  args: FLAGS,
});
try {
  await measure(browser, plan.studies.find((s) => s.name === plan.performanceStudy));
  const context = await browser.newContext({ viewport: VIEWPORT });
  await studyListPage(context);
  for (const study of plan.studies) {
    await openStudy(context, study);
  }
  await openMpr(context, plan.studies.find((s) => s.name === plan.mprStudy));
  await context.close();
} catch (error) {
  report.error = String(error?.stack ?? error);
} finally {
  await browser.close();
}
report.seconds = (Date.now() - started) / 1000;
process.stdout.write(`${JSON.stringify(report)}\n`);
