// Helpers shared by the browser tests that drive the demo page (demo.test.mjs, tls.test.mjs,
// cluster.test.mjs): headless Debian Chromium, and what the page shows.

import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
export const TRANSPORTS = ['poll', 'longpoll', 'iframe', 'sse', 'ws'];

/** Headless Chromium (never downloaded: Debian's /usr/bin/chromium or CHROMIUM_BIN). */
export function launchChromium(extraArgs = []) {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: 20_000,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', ...extraArgs,
    ],
  });
}

/** Helpers on the demo page in `getPage()` (a function: the page may be opened later). */
export function demoPage(getPage, stepMs) {
  const h = {
    async waitConnected(name) {
      await getPage().waitForFunction(
        (want) => document.getElementById('status').textContent === want,
        `connected via ${name}`,
        { timeout: stepMs },
      );
    },

    async waitForIds(ids) {
      await getPage().waitForFunction(
        (want) => want.every((id) => document.querySelector(`.msg[data-id="${id}"]`)),
        ids,
        { timeout: stepMs, polling: 50 },
      );
    },

    /** What the page shows for the current channel, in DOM order. */
    shown() {
      return getPage().evaluate(() =>
        [...document.querySelectorAll('ol:not([hidden]) > .msg')].map((el) => ({
          id: Number(el.getAttribute('data-id')),
          transport: el.getAttribute('data-transport'),
          nick: el.querySelector('.nick').textContent,
          text: el.querySelector('.text').textContent,
        })),
      );
    },

    /** Every id shown once, ascending, with no gap from the first; the page's API agrees. */
    async assertOnceEachInOrder() {
      const ids = (await h.shown()).map((m) => m.id);
      assert.deepEqual(ids, [...ids].sort((a, b) => a - b), `ids out of order: ${ids}`);
      assert.equal(new Set(ids).size, ids.length, `an id is shown twice: ${ids}`);
      if (ids.length) assert.deepEqual(ids, Array.from({ length: ids.length }, (_, i) => ids[0] + i), `gap in ids: ${ids}`);
      const api = await getPage().evaluate(() => ({ lastId: window.heraldDemo.lastId(), ids: window.heraldDemo.messages().map((m) => m.id) }));
      assert.deepEqual(api.ids, ids, 'heraldDemo.messages() disagrees with the page');
      if (ids.length) assert.equal(api.lastId, ids[ids.length - 1]);
    },
  };
  return h;
}
