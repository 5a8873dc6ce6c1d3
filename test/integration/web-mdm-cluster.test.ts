// The web dashboard in an MDM cluster (docs/web-dashboard.md, "MDM cluster"): a browser sent to
// a Slave's address ends up on the Master's page. A real cluster of MDM processes on real etcd
// members (test/helpers/mdm-cluster.ts) and Debian's chromium driven by puppeteer-core. Proves:
// - a Slave answers / and /ui/... with 307 to the same path on the Master's published API
//   address (the plain HTTPS answer, read without following it);
// - chromium opened on the Slave's address lands on the Master's /ui/, logs in there, and the
//   page's MDM cluster panel names that Master;
// - after kill -9 of the Master, the page it showed says the MDM is not answering, and the
//   former Slave, now Master, serves the page itself (no redirect) and logs in.
// The certificate is the cluster's self-signed one: chromium runs with --ignore-certificate-errors.

import * as fs from 'node:fs';
import * as https from 'node:https';
import * as path from 'node:path';
import t from 'tap';
import { adminPassword, until } from '../helpers/cluster.js';
import { startMdmCluster } from '../helpers/mdm-cluster.js';
import { chromium, openBrowser } from '../helpers/browser.js';
import { repoRoot } from '../helpers/processes.js';

const artifacts = path.join(repoRoot, '.tap', 'artifacts', 'web-mdm-cluster');

/** One HTTPS GET, its redirect not followed. */
function getOnce(url: string, ca: Buffer): Promise<{ status: number; location: string | undefined }> {
  return new Promise((resolve, reject) => {
    const request = https.get(url, { ca, timeout: 10_000 }, (response) => {
      response.resume();
      resolve({ status: response.statusCode ?? 0, location: response.headers.location });
    });
    request.on('timeout', () => request.destroy(new Error(`GET ${url}: no answer in 10 s`)));
    request.on('error', reject);
  });
}

t.test('a Slave sends the browser to the Master; after the Master dies, the new Master serves the page', async (t) => {
  if (!fs.existsSync(chromium)) {
    t.fail(`${chromium} is missing: scripts/install-deps.sh installs Debian's chromium`);
    return;
  }
  const dir = t.testdir();
  const cluster = await startMdmCluster(t, dir, { size: 3 });
  const masterIndex = await cluster.master(60_000);
  const slaveIndex = 1 - masterIndex;
  const master = cluster.mdms[masterIndex];
  const slave = cluster.mdms[slaveIndex];
  if (master === undefined || slave === undefined) throw new Error('an MDM cluster of 3 has two MDMs');
  const ca = fs.readFileSync(cluster.certPath);

  for (const [asked, expected] of [['/', '/ui/'], ['/ui/', '/ui/'], ['/ui/static/app.js', '/ui/static/app.js']] as const) {
    const answer = await getOnce(`https://${slave.apiAddress}${asked}`, ca);
    t.same(answer, { status: 307, location: `https://${master.apiAddress}${expected}` }, `the Slave answers ${asked} with 307 to the Master's ${expected}`);
  }

  const opened = await openBrowser(t, dir);
  if (opened === null) return;
  const { page } = opened;
  const login = async (): Promise<void> => {
    await page.waitForSelector('[data-testid=login]', { timeout: 30_000 });
    await page.type('input[name=password]', adminPassword);
    await page.click('[data-testid=login] button[type=submit]');
    await page.waitForSelector('[data-testid=mdm-cluster] table', { timeout: 60_000 });
  };

  await page.goto(`https://${slave.apiAddress}/`, { waitUntil: 'load' });
  t.equal(page.url(), `https://${master.apiAddress}/ui/`, 'opened on the Slave, the browser is on the Master\'s page');
  await login();
  const panel = await until(
    'the MDM cluster panel to name the Master',
    async () => {
      const shown = await page.$eval('[data-testid=mdm-cluster]', (element: unknown) => (element as { textContent: string | null }).textContent ?? '');
      return shown.includes(`${master.name}Master`) ? shown : undefined;
    },
    30_000,
  );
  t.pass(`logged in on the Master; the panel says: ${panel}`);
  fs.mkdirSync(artifacts, { recursive: true });
  await page.screenshot({ path: path.join(artifacts, 'master-via-slave.png'), fullPage: true });

  await master.handle?.kill();
  await page.waitForSelector('[data-testid=mdm-dead]', { timeout: 30_000 });
  t.pass('the page on the killed Master says the MDM is not answering');
  const newMaster = await cluster.master(90_000);
  t.equal(newMaster, slaveIndex, 'the Slave took over');
  await page.goto(`https://${slave.apiAddress}/`, { waitUntil: 'load' });
  t.equal(page.url(), `https://${slave.apiAddress}/ui/`, 'the new Master serves the page itself');
  await login();
  t.pass('and logs in there (sessions are per MDM)');
  await page.screenshot({ path: path.join(artifacts, 'new-master.png'), fullPage: true });
});
