// A real MDM on a preloaded data directory, the fleet simulator connected to it (every SDS,
// then every SDC), and a REST client: the setup of the scale tests (src/sim/fleet.ts).

import * as path from 'node:path';
import type { Logger } from 'pino';
import { ApiClient } from '../../src/cli/manage-client.js';
import { Fleet, preloadDataDir, type FleetPlan, type PreloadedCluster } from '../../src/sim/fleet.js';
import { startMdm, type Mdm } from './cluster.js';
import type { TeardownHost } from './processes.js';

export interface FleetCluster {
  cluster: PreloadedCluster;
  mdm: Mdm;
  fleet: Fleet;
  api: ApiClient;
}

/** Preloads `dir`/mdm with `plan`, starts the MDM with `mdmArgs`, connects the whole fleet. */
export async function startFleetCluster(t: TeardownHost, dir: string, plan: FleetPlan, mdmArgs: string[], log: Logger): Promise<FleetCluster> {
  const cluster = await preloadDataDir(path.join(dir, 'mdm'), plan, log);
  const mdm = await startMdm(t, dir, undefined, mdmArgs);
  const fleet = new Fleet({ mdmAddress: mdm.address, cluster, sdcCount: plan.sdcCount, log });
  t.teardown(() => fleet.close());
  await fleet.connectSdss();
  await fleet.connectSdcs();
  const api = await ApiClient.connect(
    { api: mdm.apiUrl, dir: undefined, username: 'admin', 'password-file': path.join(dir, 'admin-password.txt'), 'ca-cert': mdm.certPath, insecure: false },
    { stdout: process.stdout, stderr: process.stderr, env: {} },
  );
  return { cluster, mdm, fleet, api };
}
