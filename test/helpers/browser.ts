// Debian's chromium for the web dashboard tests, driven by puppeteer-core (no browser download):
// headless, no sandbox (the tests run as root), the MDM's self-signed certificate accepted,
// its profile in the test's directory, closed at the test's end.

import * as fs from 'node:fs';
import * as path from 'node:path';
import puppeteer, { type Browser, type Page } from 'puppeteer-core';
import type { Test } from 'tap';

export const chromium = '/usr/bin/chromium';

/** A browser and one page of 1400×1000 in it, or null (the test failed) when chromium is missing. */
export async function openBrowser(t: Test, dir: string): Promise<{ browser: Browser; page: Page } | null> {
  if (!fs.existsSync(chromium)) {
    t.fail(`${chromium} is missing: scripts/install-deps.sh installs Debian's chromium`);
    return null;
  }
  const browser = await puppeteer.launch({
    executablePath: chromium,
    headless: true,
    userDataDir: path.join(dir, 'chromium'),
    args: ['--no-sandbox', '--headless=new', '--ignore-certificate-errors', '--disable-gpu', '--disable-dev-shm-usage'],
  });
  t.teardown(() => browser.close());
  const page = await browser.newPage();
  await page.setViewport({ width: 1400, height: 1000 });
  return { browser, page };
}
