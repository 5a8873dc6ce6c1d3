// The web dashboard in a real browser: Debian's chromium (driven by puppeteer-core, no browser
// download) against a real cluster (an MDM serving the page on its HTTPS REST port, three SDSs
// on sparse files, an SDC serving NBD). It proves, through the page as a user clicks it:
// - a wrong password is refused, after the same delay as the REST login; the right one gives
//   a session cookie that is HttpOnly, Secure and SameSite=Strict;
// - the capacity numbers the page shows are the API's (GET /api/dashboard through the CLI);
// - a state-changing API call with the session cookie but without (or with a wrong) CSRF token
//   is refused with 403 MB_ERR_CSRF, and changes nothing; without the cookie, 401;
// - a volume created and mapped through the page's dialog is exported by the SDC over NBD,
//   and fio (its nbd engine, crc32c verify) writes and reads it back; the IOPS chart moves
//   while fio runs, and so does the latency chart, from the client latency the SDC's heartbeats
//   carry (the API's userDataSdcReadLatency/userDataSdcWriteLatency, which must be there and
//   count IO); removing the mapped volume is refused and the dialog shows the API's error;
// - after kill -9 of an SDS the page shows it down and the rebuild's progress, and its events
//   panel (long-polling GET /api/events) shows the sdsDown event the API lists, with its id;
// - logout ends the session (the API answers the page 401); a dead MDM shows as dead.
// Screenshots go to .tap/artifacts/web-dashboard/ (MESHBLOCK_WEB_SCREENSHOT=docs/img/dashboard.png
// also writes the README's picture there).
// The certificate is the MDM's self-signed one: chromium runs with --ignore-certificate-errors.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import type { Page } from 'puppeteer-core';
import t from 'tap';
import type { RestDashboard } from '../../src/mdm/rest-objects.js';
import { adminPassword, startCluster, until } from '../helpers/cluster.js';
import { expectClean, fioVerify } from '../helpers/fault-load.js';
import { chromium, openBrowser } from '../helpers/browser.js';
import { repoRoot, run } from '../helpers/processes.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const artifacts = path.join(repoRoot, '.tap', 'artifacts', 'web-dashboard');

// What the callbacks run in the page touch of the DOM (this project's TypeScript has no DOM lib).
interface DomElement {
  textContent: string | null;
  getAttribute(name: string): string | null;
}
interface DomInput extends DomElement {
  value: string;
}

async function text(page: Page, selector: string): Promise<string> {
  return page.$eval(selector, (element: unknown) => (element as DomElement).textContent ?? '');
}

async function attribute(page: Page, selector: string, name: string): Promise<string | null> {
  return page.$eval(selector, (element: unknown, attributeName: string) => (element as DomElement).getAttribute(attributeName), name);
}

/** A fetch made by the page itself (its cookie, its origin), with the headers given. */
async function pageFetch(page: Page, method: string, url: string, headers: Record<string, string>, body?: unknown): Promise<{ status: number; body: { code?: string } }> {
  return page.evaluate(
    async (method, url, headers, body) => {
      const init: RequestInit = { method, headers: { 'content-type': 'application/json', 'x-meshblock-client': 'web', ...headers }, credentials: 'same-origin' };
      if (body !== undefined) init.body = JSON.stringify(body);
      const response = await fetch(url, init);
      return { status: response.status, body: (await response.json()) as { code?: string } };
    },
    method,
    url,
    headers,
    body,
  );
}

async function screenshot(page: Page, name: string): Promise<string> {
  fs.mkdirSync(artifacts, { recursive: true });
  const file = path.join(artifacts, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

t.test('the web dashboard in chromium: login, capacity, CSRF, create and map a volume served over NBD, live IOPS, an SDS killed', async (t) => {
  if (!fs.existsSync(chromium)) {
    t.fail(`${chromium} is missing: scripts/install-deps.sh installs Debian's chromium`);
    return;
  }
  const dir = t.testdir();
  const cluster = await startCluster(t, dir, {
    sdsCount: 3,
    deviceBytes: 3 * GiB,
    volumes: [{ name: 'seed', sizeBytes: GiB }],
    mdmArgs: ['--sds-down-after', '2', '--rebuild-after', '3'],
  });
  const dashboardJson = async (): Promise<RestDashboard> => {
    const result = await cluster.meshblock(['dashboard', '--json']);
    if (result.code !== 0) throw new Error(`meshblock dashboard failed: ${result.stderr}`);
    return JSON.parse(result.stdout) as RestDashboard;
  };
  // Some data on the seed volume, so that capacity in use and the rebuild have bytes to show.
  // 256 MiB: a rebuild of it lasts several of the page's 2 s refreshes even on a fast machine.
  expectClean(t, await fioVerify(cluster.uri('seed'), { sizeBytes: 256 * MiB, loops: 1, bs: '1M' }).done, 'writing the seed volume');

  const opened = await openBrowser(t, dir);
  if (opened === null) return;
  const { page } = opened;
  const consoleErrors: string[] = [];
  page.on('console', (message) => {
    if (message.type() === 'error') consoleErrors.push(message.text());
  });
  page.on('pageerror', (err) => consoleErrors.push(String(err)));
  const base = cluster.mdm.apiUrl.replace(/\/$/, '');

  await t.test('the root redirects to the page, which asks for a login under a strict CSP', async (t) => {
    const response = await page.goto(`${base}/`, { waitUntil: 'networkidle0' });
    t.equal(new URL(page.url()).pathname, '/ui/', '/ redirects to /ui/');
    const policy = response?.headers()['content-security-policy'] ?? '';
    t.match(policy, /script-src 'self' 'sha256-[A-Za-z0-9+/=]+'(;|$)/, 'scripts: this origin and the import map by its hash');
    t.notMatch(policy, /unsafe-inline|unsafe-eval/, 'no unsafe-inline, no unsafe-eval');
    await page.waitForSelector('[data-testid=login]');
  });

  await t.test('a wrong password is refused, after the delay', async (t) => {
    await page.type('input[name=password]', 'not the password');
    const startMs = performance.now();
    await page.click('[data-testid=login] button[type=submit]');
    await page.waitForSelector('[data-testid=login-error]', { timeout: 30_000 });
    const elapsedMs = performance.now() - startMs;
    t.match(await text(page, '[data-testid=login-error]'), /wrong user name or password/, 'the API\'s refusal is shown');
    t.ok(elapsedMs >= 900, `answered after ${Math.round(elapsedMs)} ms (the REST login's 1 s delay)`);
    t.same((await page.cookies()).filter((cookie) => cookie.name.includes('meshblock')), [], 'no session cookie');
  });

  await t.test('the right password logs in with an HttpOnly, Secure, SameSite=Strict cookie', async (t) => {
    await page.$eval('input[name=password]', (input: unknown) => ((input as DomInput).value = ''));
    await page.type('input[name=password]', adminPassword);
    await page.click('[data-testid=login] button[type=submit]');
    await page.waitForSelector('[data-testid=ring-raw]', { timeout: 30_000 });
    const cookie = (await page.cookies()).find((entry) => entry.name === '__Host-meshblock-session');
    t.ok(cookie, 'the session cookie is set');
    t.match(cookie, { httpOnly: true, secure: true, sameSite: 'Strict', path: '/' }, 'HttpOnly, Secure, SameSite=Strict, Path=/');
    t.equal(await page.evaluate('document.cookie'), '', 'the page\'s scripts cannot read it');
  });

  await t.test('capacity on the page equals the API\'s', async (t) => {
    // The page refreshes every 2 s; the cluster is idle, so both settle on the same numbers.
    const fields = {
      'capacity-max': 'maxCapacityInKb',
      'capacity-usable': 'usableCapacityInKb',
      'capacity-in-use': 'capacityInUseInKb',
      'capacity-protected': 'protectedCapacityInKb',
      'capacity-degraded': 'degradedCapacityInKb',
      'capacity-failed': 'failedCapacityInKb',
      'capacity-spare': 'spareCapacityInKb',
      'capacity-unused': 'unusedCapacityInKb',
      'capacity-thick': 'thickCapacityProvisionedInKb',
      'capacity-thin': 'thinCapacityProvisionedInKb',
      'capacity-available': 'capacityAvailableForVolumeAllocationInKb',
    } as const;
    let last = '';
    await until(
      'the page\'s capacity to equal the API\'s',
      async () => {
        const api = (await dashboardJson()).capacity as unknown as Record<string, number>;
        const shown: Record<string, number> = {};
        for (const testId of Object.keys(fields)) shown[testId] = Number(await attribute(page, `[data-testid=${testId}]`, 'data-kib'));
        const expected = Object.fromEntries(Object.entries(fields).map(([testId, field]) => [testId, api[field]]));
        last = JSON.stringify({ shown, expected });
        return JSON.stringify(shown) === JSON.stringify(expected) ? { shown, expected } : undefined;
      },
      30_000,
    ).then(
      ({ shown }) => {
        t.pass(`equal: ${JSON.stringify(shown)}`);
        t.ok((shown['capacity-max'] as number) > 0 && (shown['capacity-in-use'] as number) > 0, 'raw capacity and capacity in use are not zero');
      },
      () => t.fail(`never equal: ${last}`),
    );
  });

  await t.test('without the CSRF token a change is refused and nothing changes', async (t) => {
    const body = { name: 'csrfvol', volumeSizeInKb: GiB / 1024, storagePoolId: (await dashboardJson()).storagePools[0]?.id };
    const without = await pageFetch(page, 'POST', '/api/types/Volume/instances', {}, body);
    t.match(without, { status: 403, body: { code: 'MB_ERR_CSRF' } }, 'no X-CSRF-Token: 403 MB_ERR_CSRF');
    const wrong = await pageFetch(page, 'POST', '/api/types/Volume/instances', { 'x-csrf-token': 'f'.repeat(64) }, body);
    t.match(wrong, { status: 403, body: { code: 'MB_ERR_CSRF' } }, 'a wrong X-CSRF-Token: 403 MB_ERR_CSRF');
    const logoutByGet = await pageFetch(page, 'GET', '/api/logout', {});
    t.match(logoutByGet, { status: 403, body: { code: 'MB_ERR_CSRF' } }, 'GET /api/logout by cookie needs the token too');
    const listed = await cluster.meshblock(['volume', 'list', '--json']);
    t.notMatch(listed.stdout, /csrfvol/, 'no volume was made');
    const noCookie = await run('curl', ['-sk', '-o', '/dev/null', '-w', '%{http_code}', `${base}/api/dashboard`]);
    t.equal(noCookie.stdout, '401', 'without the cookie (or a token) the API answers 401');
  });

  let fio: ReturnType<typeof fioVerify> | null = null;
  await t.test('a volume created and mapped through the page is served over NBD; the IOPS chart moves under fio', async (t) => {
    await page.click('[data-testid=nav-frontend]');
    await page.waitForSelector('[data-testid=create-volume]');
    await page.click('[data-testid=create-volume]');
    await page.waitForSelector('[data-testid=dialog]');
    await page.type('[data-testid=dialog] input[name=name]', 'webvol');
    await page.$eval('[data-testid=dialog] input[name=sizeGib]', (input: unknown) => ((input as DomInput).value = ''));
    await page.type('[data-testid=dialog] input[name=sizeGib]', '1');
    const sdcId = await page.$eval('[data-testid=dialog] select[name=sdcId]', (select: unknown, name: string) => Array.from((select as { options: ArrayLike<DomInput> }).options).find((option) => option.textContent === name)?.value ?? '', cluster.sdc.name);
    t.not(sdcId, '', `the dialog offers ${cluster.sdc.name}`);
    await page.select('[data-testid=dialog] select[name=sdcId]', sdcId);
    await page.click('[data-testid=dialog-confirm]');
    await page.waitForSelector(`[data-testid=mapping-webvol-${cluster.sdc.name}]`, { timeout: 30_000 });
    t.pass('the page shows webvol mapped');
    await until('the SDC to export webvol', async () => ((await run('nbdinfo', ['--list', '--json', `nbd://${cluster.sdc.nbdAddress}`])).stdout.includes('"webvol"') ? true : undefined), 30_000);
    const info = await run('nbdinfo', ['--json', cluster.uri('webvol')]);
    t.match(info.stdout, new RegExp(`"export-size":\\s*${GiB}`), 'nbdinfo: a 1 GiB export');

    // A refusal is shown as the API gave it: a mapped volume cannot be removed.
    await page.click('[data-testid=volume-webvol] [data-testid=remove]');
    await page.waitForSelector('[data-testid=dialog]');
    await page.click('[data-testid=dialog-confirm]');
    await page.waitForSelector('[data-testid=dialog-error]', { timeout: 30_000 });
    t.match(await text(page, '[data-testid=dialog-error]'), /MB_ERR_VOLUME_MAPPED/, 'removing a mapped volume: the API\'s error in the dialog');
    await page.click('[data-testid=dialog] button[type=button]');

    // Resize and QoS limits through their dialogs; the API (not the page) says whether they took.
    // A dialog closes when the page has the API's answer, which comes after the change is
    // visible to the test's own request (the MDM records the change's event, fdatasync'd,
    // before it answers: seconds on a loaded disk): a click before that lands on its backdrop.
    const dialogClosed = (): Promise<unknown> => page.waitForSelector('[data-testid=dialog]', { hidden: true, timeout: 60_000 });
    const volumeOf = async (): Promise<{ sizeInKb: number; mappedSdcInfo: Array<{ limitIops: number }> }> => {
      const listed = (await pageFetch(page, 'GET', '/api/types/Volume/instances', {})).body as unknown as Array<{ name: string; sizeInKb: number; mappedSdcInfo: Array<{ limitIops: number }> }>;
      const found = listed.find((entry) => entry.name === 'webvol');
      if (found === undefined) throw new Error('webvol is not listed');
      return found;
    };
    await page.click('[data-testid=volume-webvol] [data-testid=resize]');
    await page.waitForSelector('[data-testid=dialog] input[name=sizeGib]');
    await page.$eval('[data-testid=dialog] input[name=sizeGib]', (input: unknown) => ((input as DomInput).value = ''));
    await page.type('[data-testid=dialog] input[name=sizeGib]', '2');
    await page.click('[data-testid=dialog-confirm]');
    await until('the resize to land', async () => ((await volumeOf()).sizeInKb === (2 * GiB) / 1024 ? true : undefined), 30_000);
    t.pass('resized to 2 GiB through the page');
    await dialogClosed();
    await page.click(`[data-testid=mapping-webvol-${cluster.sdc.name}] [data-testid=limits]`);
    await page.waitForSelector('[data-testid=dialog] input[name=iopsLimit]');
    await page.$eval('[data-testid=dialog] input[name=iopsLimit]', (input: unknown) => ((input as DomInput).value = ''));
    await page.type('[data-testid=dialog] input[name=iopsLimit]', '5000');
    await page.click('[data-testid=dialog-confirm]');
    await until('the limit to land', async () => ((await volumeOf()).mappedSdcInfo[0]?.limitIops === 5000 ? true : undefined), 30_000);
    t.pass('IOPS limit 5000 set through the page');
    await dialogClosed();

    await page.click('[data-testid=nav-dashboard]');
    await page.waitForSelector('[data-testid=chart-iops]');
    // Long enough to be running through the SDS kill below (a few tens of seconds here), short enough for CI.
    fio = fioVerify(cluster.uri('webvol'), { sizeBytes: 24 * MiB, loops: 3, bs: '4k', iodepth: 8 });
    const moved = await until(
      'the IOPS chart to show fio\'s IO',
      async () => {
        const last = JSON.parse((await attribute(page, '[data-testid=chart-iops]', 'data-last')) ?? '[]') as Array<number | null>;
        return (last[0] ?? 0) + (last[1] ?? 0) > 0 ? last : undefined;
      },
      60_000,
    );
    t.pass(`the IOPS chart moved: read ${moved[0]}, write ${moved[1]} IO/s`);
    const latencyShown = await until(
      'the latency chart to show fio\'s latency',
      async () => {
        const last = JSON.parse((await attribute(page, '[data-testid=chart-latency]', 'data-last')) ?? '[]') as Array<number | null>;
        return (last[0] ?? 0) + (last[1] ?? 0) > 0 ? last : undefined;
      },
      60_000,
    );
    t.pass(`the latency chart shows a number: read ${latencyShown[0]} ms, write ${latencyShown[1]} ms`);
    // The API's figure the chart is drawn from: ScaleIO's shape, a Bwc whose weight is µs.
    const systemId = (await dashboardJson()).system.id;
    const apiLatency = await until(
      'the API to report client write latency',
      async () => {
        const reply = await pageFetch(page, 'GET', `/api/instances/System::${systemId}/relationships/Statistics`, {});
        const write = (reply.body as unknown as Record<string, { numSeconds: number; totalWeightInKb: number; numOccured: number } | undefined>)['userDataSdcWriteLatency'];
        return reply.status === 200 && write !== undefined && write.numOccured > 0 ? write : undefined;
      },
      60_000,
    );
    const meanUs = apiLatency.totalWeightInKb / apiLatency.numOccured;
    t.ok(meanUs > 1 && meanUs < 10_000_000, `the API's userDataSdcWriteLatency is a plausible mean: ${JSON.stringify(apiLatency)} = ${meanUs.toFixed(0)} µs per write`);
    await until('the busiest volumes to list webvol', async () => ((await text(page, '[data-testid=busiest]')).includes('webvol') ? true : undefined), 30_000);
    t.pass('webvol is among the busiest volumes');
    await screenshot(page, 'dashboard-under-fio');
    const readme = process.env['MESHBLOCK_WEB_SCREENSHOT'];
    if (readme !== undefined && readme !== '') {
      await page.screenshot({ path: path.resolve(repoRoot, readme), fullPage: true });
      t.comment(`wrote ${readme}`);
    }
  });

  await t.test('kill -9 of an SDS: the page shows it down and the rebuild progress', async (t) => {
    await (cluster.sds[2] as { kill(): Promise<void> }).kill();
    await page.waitForSelector('[data-testid=sds-down]', { timeout: 60_000 });
    t.pass('the health panel shows an SDS down');
    const shownEventId = await until(
      'the events panel to show sds3 down',
      async () => ((await page.$('[data-testid=event][data-event-type=sdsDown][data-event-object=sds3]')) !== null ? await attribute(page, '[data-testid=event][data-event-type=sdsDown][data-event-object=sds3]', 'data-event-id') : undefined),
      60_000,
    );
    const listed = await pageFetch(page, 'GET', '/api/events', {});
    const apiEvent = (listed.body as unknown as { events: Array<{ id: number; type: string; objectName: string }> }).events.find((event) => event.type === 'sdsDown' && event.objectName === 'sds3');
    t.equal(shownEventId, String(apiEvent?.id), `the events panel shows the API's sdsDown event of sds3 (id ${apiEvent?.id}), without reloading the page`);
    // First the wait before sds3 is declared out, then the copying: the panel shows bytes copied.
    await until('the rebuild panel to show the wait', async () => ((await attribute(page, '[data-testid=rebuild]', 'data-state')) !== 'idle' ? true : undefined), 60_000);
    t.match(await text(page, '[data-testid=rebuild]'), /groups filling.*ETA/, 'the rebuild panel shows groups filling, rate and ETA');
    const copying = await until(
      'the rebuild to copy',
      async () => {
        const state = await attribute(page, '[data-testid=rebuild]', 'data-state');
        const bytesDone = Number(await attribute(page, '[data-testid=rebuild]', 'data-bytes-done'));
        return state === 'running' && bytesDone > 0 ? { bytesDone, shown: await text(page, '[data-testid=rebuild]') } : undefined;
      },
      120_000,
    );
    t.pass(`the rebuild's progress shows: ${copying.shown}`);
    await screenshot(page, 'dashboard-rebuild');
    await page.click('[data-testid=nav-backend]');
    await page.waitForSelector('[data-testid=sds-row-sds3]');
    t.match(await text(page, '[data-testid=sds-row-sds3]'), /Down|Disconnected/, 'the backend view shows sds3 down');
    await screenshot(page, 'backend');
    await page.click('[data-testid=nav-frontend]');
    await screenshot(page, 'frontend');
    if (fio !== null) expectClean(t, await fio.done, 'on the volume made through the page (sds3 killed under it)');
  });

  await t.test('logout ends the session', async (t) => {
    await page.click('[data-testid=logout]');
    await page.waitForSelector('[data-testid=login]');
    const after = await pageFetch(page, 'GET', '/api/dashboard', {});
    t.equal(after.status, 401, 'the API answers the page 401 after logout');
  });

  await t.test('a dead MDM shows as dead', async (t) => {
    await page.type('input[name=password]', adminPassword);
    await page.click('[data-testid=login] button[type=submit]');
    // The page comes back on the view it was on (the frontend, from the URL's #/frontend).
    await page.waitForSelector('[data-testid=nav-dashboard]', { timeout: 30_000 });
    await page.click('[data-testid=nav-dashboard]');
    await page.waitForSelector('[data-testid=ring-raw]', { timeout: 30_000 });
    await cluster.mdm.kill();
    await page.waitForSelector('[data-testid=mdm-dead]', { timeout: 30_000 });
    t.match(await text(page, '[data-testid=link-state]'), /not answering/, 'the header says the MDM is not answering');
    await screenshot(page, 'mdm-dead');
  });

  t.same(consoleErrors.filter((message) => !/Failed to load resource|ERR_CONNECTION_REFUSED|net::ERR/.test(message)), [], 'no script errors (and no CSP violations) in the page');
});
