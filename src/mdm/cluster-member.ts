// One MDM of an MDM cluster: a Slave that follows the command log in etcd and keeps its
// state machine hot, and that becomes the Master when the mastership is vacant.
//
// Roles, and what moves between them:
//
//   slave  --(master key absent, campaign won)-->  master
//   master --(lease renewal late, a commit refused or failed, a planned switch)-->  slave
//
// The Master holds `meshblock/master` with its lease. Every command it commits is an etcd
// transaction conditioned on that key (etcd-store.ts), so a Master whose lease ran out cannot
// commit. It also stops giving orders (maps, rebuilds) on its own, before the lease can have
// run out in etcd: mayAct() is false once a renewal is later than the lease minus a margin,
// measured on the monotonic clock, so a Master paused by SIGSTOP finds itself deposed the
// moment it wakes, before any timer of its service can send anything.
//
// A Slave that steps down drops its service (wire listener, SDS and SDC connections: the
// fence) and reloads its state from etcd, which is the only truth about what was committed.

import { performance } from 'node:perf_hooks';
import type { Lease } from 'etcd3';
import type { Logger } from 'pino';
import { parseHostPort } from '../common/address.js';
import { MeshblockError } from '../common/errors.js';
import { etcdCallTimeoutMs, mdmCampaignIntervalMs, mdmFollowIntervalMs, mdmHandoverMs, mdmMasterLeaseMarginMs, mdmMasterLeaseMs } from '../common/limits.js';
import { EtcdCommandLog, type EtcdStore, type MasterRecord, type MdmRecord } from './etcd-store.js';
import { emptyModel } from './model.js';
import type { MdmController } from './controller.js';
import { MdmService, type MdmServiceOptions } from './service.js';
import { MdmError, StateMachine } from './state-machine.js';

export type ClusterRole = 'master' | 'slave';

/** ScaleIO's MdmCluster object (what queryMdmCluster answers). */
export interface MdmClusterView {
  id: string;
  name: string;
  /** OneNode, ThreeNodes or FiveNodes (another count while members are being added or removed: e.g. TwoNodes). */
  clusterMode: string;
  clusterState: 'ClusteredNormal' | 'ClusteredDegraded' | 'NotClustered' | 'NoQuorum';
  goodNodesNum: number;
  goodReplicasNum: number;
  master: MdmView | null;
  slaves: MdmView[];
  tieBreakers: MdmView[];
  standbyMDMs: MdmView[];
}

export interface MdmView {
  id: string;
  name: string;
  ips: string[];
  managementIPs: string[];
  port: number;
  role: 'Manager' | 'TieBreaker';
  status: 'Normal' | 'Disconnected';
  apiAddress?: string;
}

/** Where a REST request goes on this MDM now. */
export type RestRoute =
  | { kind: 'local' }
  /** `etcdError`: etcd has not answered this MDM for a while, so the Master named may be gone. */
  | { kind: 'forward'; name: string; host: string; port: number; certificate: string; etcdError: string | null }
  | { kind: 'refuse'; code: 'MB_ERR_NO_QUORUM' | 'MB_ERR_MDM_NOT_MASTER'; message: string };

export interface ClusterMemberOptions {
  store: EtcdStore;
  /** This MDM's name (its host's etcd member name). */
  name: string;
  wire: { host: string; port: number };
  apiAddress: string;
  apiCertificate: string;
  clusterId: string;
  systemName: string;
  service: Omit<MdmServiceOptions, 'mayAct' | 'onLogFailure'>;
  log: Logger;
  /** Told of every role change (logs, metrics, tests). */
  onRoleChange?: (role: ClusterRole) => void;
}

export class MdmClusterMember {
  role: ClusterRole = 'slave';
  /** The service while Master; null while Slave. */
  service: MdmService | null = null;
  /** The followed state (Slave), or the service's (Master). Null until first loaded. */
  private state: StateMachine | null = null;
  private seq = 0;
  private lease: Lease | null = null;
  private leaseFiredAtMs = 0;
  /** Monotonic time (performance.now) until which the mastership surely holds in etcd. */
  private validUntilMs = 0;
  private masterRevision: string | null = null;
  /** The Master as last read from etcd, for forwarding. */
  private knownMaster: MasterRecord | null = null;
  /** When etcd last answered (monotonic), and its last error. */
  private etcdAnsweredAtMs = performance.now();
  private etcdError: string | null = null;
  private timer: NodeJS.Timeout | null = null;
  private ticking = false;
  private lastCampaignMs = 0;
  private stopped = false;
  private readonly log: Logger;
  private readonly record: MdmRecord;

  constructor(private readonly options: ClusterMemberOptions) {
    this.log = options.log;
    this.record = {
      name: options.name,
      wireAddress: `${options.wire.host}:${options.wire.port}`,
      apiAddress: options.apiAddress,
      apiCertificate: options.apiCertificate,
      startedAtMs: Date.now(),
    };
  }

  /** Joins: a lease, the MDM announced, the state loaded; then follows and campaigns. */
  async start(): Promise<void> {
    await this.newLease();
    await this.reload();
    this.timer = setInterval(() => void this.tick(), mdmFollowIntervalMs);
    void this.tick();
  }

  // --- leases -------------------------------------------------------------------------------

  private async newLease(): Promise<void> {
    const lease = this.options.store.client.lease(mdmMasterLeaseMs / 1000);
    lease.on('keepaliveFired', () => {
      if (this.lease === lease) this.leaseFiredAtMs = performance.now();
    });
    lease.on('keepaliveSucceeded', () => {
      if (this.lease !== lease) return;
      // etcd counts the renewed lease from when it received the renewal, which is after it
      // was sent: counting from the send is the safe side.
      this.validUntilMs = this.leaseFiredAtMs + mdmMasterLeaseMs - mdmMasterLeaseMarginMs;
      this.etcdAnsweredAtMs = performance.now();
    });
    lease.on('lost', (err) => {
      if (this.lease !== lease) return;
      this.log.warn({ err }, 'the MDM lease is lost');
      this.lease = null;
      this.validUntilMs = 0;
      if (this.role === 'master') void this.stepDown('the lease was lost');
    });
    const grantedFromMs = performance.now();
    this.lease = lease;
    try {
      await lease.grant();
      this.validUntilMs = grantedFromMs + mdmMasterLeaseMs - mdmMasterLeaseMarginMs;
      await this.options.store.announce(this.record, lease);
    } catch (err) {
      // Taken again on a later tick.
      if (this.lease === lease) this.lease = null;
      lease.release();
      throw err;
    }
  }

  /** True while this MDM is Master and its lease surely holds. */
  mayAct(): boolean {
    return this.role === 'master' && !this.stopped && performance.now() < this.validUntilMs;
  }

  // --- following and campaigning --------------------------------------------------------------

  private async tick(): Promise<void> {
    if (this.ticking || this.stopped) return;
    this.ticking = true;
    try {
      if (this.role === 'master') {
        if (!this.mayAct()) await this.stepDown(`the lease was not renewed within ${mdmMasterLeaseMs - mdmMasterLeaseMarginMs} ms`);
        return;
      }
      if (this.lease === null) await this.newLease();
      if (this.state === null) await this.reload();
      else await this.follow();
      const nowMs = performance.now();
      if (nowMs - this.lastCampaignMs >= mdmCampaignIntervalMs) {
        this.lastCampaignMs = nowMs;
        await this.campaignIfVacant();
      }
      this.etcdAnsweredAtMs = performance.now();
      this.etcdError = null;
    } catch (err) {
      this.etcdError = err instanceof Error ? err.message : String(err);
      this.log.debug({ err }, 'cluster tick failed');
    } finally {
      this.ticking = false;
    }
  }

  /** Loads the whole state from etcd (a Slave's start, and after stepping down). */
  private async reload(): Promise<void> {
    const loaded = await this.options.store.load();
    const state = new StateMachine(loaded.model ?? emptyModel(this.options.clusterId, this.options.systemName));
    for (const [index, command] of loaded.commands.entries()) {
      try {
        state.replay(command);
      } catch (err) {
        throw new MeshblockError('MB_ERR_JOURNAL_REPLAY', `etcd log record ${loaded.snapshotSeq + index + 1} (${command.type}) does not apply: ${(err as Error).message}`, { cause: err });
      }
    }
    state.observe({ type: 'connectionsLost' });
    this.state = state;
    this.seq = loaded.seq;
    this.log.info({ seq: this.seq, snapshotSeq: loaded.snapshotSeq, commands: loaded.commands.length, epoch: state.model.epoch }, 'state loaded from etcd');
  }

  /** Applies what the Master committed since. */
  private async follow(): Promise<void> {
    const state = this.state;
    if (state === null) return;
    for (;;) {
      const batch = await this.options.store.readAfter(this.seq);
      if (batch === 'compacted') {
        await this.reload();
        return;
      }
      if (batch.length === 0) return;
      for (const command of batch) {
        try {
          state.replay(command);
        } catch (err) {
          // The Master applied it; a Slave that cannot is broken, not the log: load anew.
          this.log.error({ err, seq: this.seq + 1, command: command.type }, 'a committed command does not apply here; loading the state again');
          this.state = null;
          return;
        }
        this.seq += 1;
      }
    }
  }

  private async campaignIfVacant(): Promise<void> {
    const store = this.options.store;
    const master = await store.readMaster();
    this.knownMaster = master?.record ?? null;
    if (master !== null || this.lease === null) return;
    const handover = await store.readHandover();
    if (handover !== null && handover.to !== this.options.name && handover.untilMs > Date.now()) return;
    const leaseId = await this.lease.grant();
    const revision = await store.campaign({ ...this.record, lease: leaseId }, this.lease);
    if (revision === null) return;
    await this.promote(revision, leaseId);
  }

  private async promote(masterRevision: string, leaseId: string): Promise<void> {
    const startedMs = performance.now();
    this.masterRevision = masterRevision;
    this.role = 'master';
    // Catch up: the campaign's transaction came after every commit of the previous Master
    // (its commits are conditioned on its key, which is gone), so these reads see them all.
    try {
      if (this.state === null) await this.reload();
      await this.follow();
      if (this.state === null) await this.reload();
    } catch (err) {
      this.log.error({ err }, 'could not catch up after winning the mastership; giving it up');
      await this.stepDown('catching up failed');
      return;
    }
    const state = this.state as StateMachine;
    state.observe({ type: 'connectionsLost' });
    const commandLog = new EtcdCommandLog(this.options.store, masterRevision, this.seq, this.log.child({ component: 'etcd-log' }), (seq) => {
      this.seq = seq;
    });
    const service = new MdmService(state, commandLog, {
      ...this.options.service,
      mayAct: () => this.mayAct(),
      onLogFailure: (err) => {
        this.log.error({ err }, 'a commit to etcd failed; stepping down');
        void this.stepDown('a commit failed');
      },
    });
    try {
      // listen() also aborts a snapshot barrier the previous Master journaled and did not end
      // (docs/snapshots.md, step 4): it alone waited for the SDSs' answers.
      await service.listen(this.options.wire.host, this.options.wire.port);
    } catch (err) {
      this.log.error({ err }, 'could not listen for SDSs and SDCs; giving up the mastership');
      service.destroy();
      await this.stepDown('the wire listener failed');
      return;
    }
    if (this.role !== 'master' || this.masterRevision !== masterRevision) {
      // Deposed while starting.
      service.destroy();
      return;
    }
    this.service = service;
    this.knownMaster = { ...this.record, lease: leaseId };
    this.log.warn({ masterRevision, seq: this.seq, epoch: state.model.epoch, takeoverMs: Math.round(performance.now() - startedMs) }, 'this MDM is the Master');
    this.options.onRoleChange?.('master');
  }

  /** Gives up the mastership: the fence first (no more orders), then etcd, then the state. */
  async stepDown(reason: string): Promise<void> {
    if (this.role !== 'master') return;
    this.role = 'slave';
    const revision = this.masterRevision;
    this.masterRevision = null;
    const service = this.service;
    this.service = null;
    service?.destroy();
    this.state = null;
    this.knownMaster = null;
    this.log.warn({ reason }, 'this MDM is no longer the Master; following');
    this.options.onRoleChange?.('slave');
    if (revision !== null && performance.now() < this.validUntilMs) {
      // Leaving in good order: the next Master need not wait out the lease.
      await this.options.store.resign(revision).catch((err: unknown) => this.log.debug({ err }, 'could not resign'));
    }
    // The lease may be the reason; a new one is taken on the next tick in any case, so that
    // a key written with the old one cannot outlive this decision.
    const lease = this.lease;
    this.lease = null;
    if (lease !== null) void lease.revoke().catch(() => undefined);
  }

  /** A planned ownership switch: the named MDM becomes Master, within mdmHandoverMs. */
  async switchOwnership(to: string | null): Promise<string> {
    if (!this.mayAct() || this.masterRevision === null) throw new MeshblockError('MB_ERR_MDM_NOT_MASTER', 'only the Master can hand over the mastership');
    const roster = await this.options.store.roster();
    const candidates = roster.all.filter((mdm) => mdm.name !== this.options.name && roster.live.has(mdm.name)).map((mdm) => mdm.name);
    const target = to ?? candidates[0];
    if (target === undefined) throw new MeshblockError('MB_ERR_MDM_CLUSTER_CHANGE', 'no other MDM is running to take over');
    if (target === this.options.name) throw new MeshblockError('MB_ERR_MDM_CLUSTER_CHANGE', `'${target}' is the Master already`);
    if (!candidates.includes(target)) {
      const known = roster.all.some((mdm) => mdm.name === target);
      throw new MeshblockError('MB_ERR_MDM_CLUSTER_CHANGE', known ? `MDM '${target}' is not running` : `no MDM named '${target}' (MDMs: ${roster.all.map((mdm) => mdm.name).join(', ')})`);
    }
    const revision = this.masterRevision;
    // The fence before the handover: nothing more is ordered from here.
    const service = this.service;
    this.service = null;
    this.role = 'slave';
    this.masterRevision = null;
    const handed = await this.options.store.handOver(revision, target, Date.now() + mdmHandoverMs);
    service?.destroy();
    this.state = null;
    this.knownMaster = null;
    this.options.onRoleChange?.('slave');
    if (!handed) throw new MeshblockError('MB_ERR_MDM_NOT_MASTER', 'the mastership was lost before the handover');
    this.log.warn({ to: target }, 'mastership handed over');
    return target;
  }

  // --- what the REST API needs --------------------------------------------------------------

  identity(): { name: string; term: string } {
    return { name: this.options.name, term: this.masterRevision ?? '0' };
  }

  route(): RestRoute {
    if (this.mayAct()) return { kind: 'local' };
    const master = this.knownMaster;
    const etcdError = this.etcdError !== null && performance.now() - this.etcdAnsweredAtMs > etcdCallTimeoutMs ? this.etcdError : null;
    if (master !== null && master.name !== this.options.name) {
      // Forwarded even when etcd is silent here: only this MDM may be cut off from it.
      const { host, port } = parseHostPort('master apiAddress', master.apiAddress);
      return { kind: 'forward', name: master.name, host, port, certificate: master.apiCertificate, etcdError };
    }
    if (etcdError !== null) return { kind: 'refuse', code: 'MB_ERR_NO_QUORUM', message: noQuorumMessage(etcdError) };
    return { kind: 'refuse', code: 'MB_ERR_MDM_NOT_MASTER', message: 'no Master at the moment (an election is under way); try again' };
  }

  /** The cluster as ScaleIO shows it; from etcd, so any MDM can answer. */
  async query(): Promise<MdmClusterView> {
    const store = this.options.store;
    const [members, roster, master] = await Promise.all([store.members(), store.roster(), store.readMaster()]);
    const managers = new Map(roster.all.map((mdm) => [mdm.name, mdm]));
    const memberNames = new Set(members.map((member) => member.name));
    const view = (mdm: MdmRecord, healthy: boolean): MdmView => {
      const wire = parseHostPort('wireAddress', mdm.wireAddress);
      const api = parseHostPort('apiAddress', mdm.apiAddress);
      return { id: mdm.name, name: mdm.name, ips: [wire.host], managementIPs: [api.host], port: wire.port, role: 'Manager', status: healthy ? 'Normal' : 'Disconnected', apiAddress: mdm.apiAddress };
    };
    const healthyMember = new Map(members.map((member) => [member.name, member.healthy]));
    let masterView: MdmView | null = null;
    const slaves: MdmView[] = [];
    const standby: MdmView[] = [];
    for (const mdm of roster.all) {
      const healthy = roster.live.has(mdm.name) && (healthyMember.get(mdm.name) ?? true);
      if (master !== null && master.record.name === mdm.name) masterView = view(mdm, healthy);
      else if (memberNames.has(mdm.name)) slaves.push(view(mdm, healthy));
      else standby.push(view(mdm, roster.live.has(mdm.name)));
    }
    const tieBreakers: MdmView[] = members
      .filter((member) => !managers.has(member.name))
      .map((member) => {
        const url = member.clientUrls[0] ?? '';
        const match = /^https?:\/\/(.+):(\d+)$/.exec(url);
        return { id: member.name, name: member.name, ips: match === null ? [] : [(match[1] as string).replace(/^\[|\]$/g, '')], managementIPs: [], port: match === null ? 0 : Number(match[2]), role: 'TieBreaker', status: member.healthy ? 'Normal' : 'Disconnected' };
      });
    const goodNodes = members.filter((member) => member.healthy).length;
    const goodReplicas = [masterView, ...slaves].filter((mdm) => mdm !== null && mdm.status === 'Normal').length;
    const allGood = goodNodes === members.length && masterView !== null && [masterView, ...slaves].every((mdm) => mdm?.status === 'Normal');
    const modes: Record<number, string> = { 1: 'OneNode', 2: 'TwoNodes', 3: 'ThreeNodes', 4: 'FourNodes', 5: 'FiveNodes' };
    return {
      id: this.options.clusterId,
      name: this.options.systemName,
      clusterMode: modes[members.length] ?? `${members.length}Nodes`,
      clusterState: masterView === null ? 'NoQuorum' : allGood ? 'ClusteredNormal' : 'ClusteredDegraded',
      goodNodesNum: goodNodes,
      goodReplicasNum: goodReplicas,
      master: masterView,
      slaves,
      tieBreakers,
      standbyMDMs: standby,
    };
  }

  /** Stops: the service goes (fence), the mastership is resigned, the lease revoked. */
  async close(): Promise<void> {
    this.stopped = true;
    if (this.timer !== null) clearInterval(this.timer);
    const service = this.service;
    const revision = this.masterRevision;
    this.service = null;
    this.role = 'slave';
    if (service !== null) await service.close().catch((err: unknown) => this.log.warn({ err }, 'service close failed'));
    if (revision !== null) await this.options.store.resign(revision).catch(() => undefined);
    await this.lease?.revoke().catch(() => undefined);
    this.lease = null;
  }

  /** The controller the REST API serves from: the service while Master; refusals otherwise. */
  controller(): MdmController {
    const service = (): MdmService => {
      const current = this.service;
      if (current === null || !this.mayAct()) throw new MdmError('MB_ERR_MDM_NOT_MASTER', 'this MDM is not the Master (any more); try again', 503);
      return current;
    };
    return {
      get state() {
        return service().state;
      },
      execute: (command) => service().execute(command),
      addDevice: (request) => service().addDevice(request),
      snapshotVolumes: (requests) => service().snapshotVolumes(requests),
      overwriteVolumeContent: (volumeId, sourceVolumeId) => service().overwriteVolumeContent(volumeId, sourceVolumeId),
      sdsStats: (sdsId) => service().sdsStats(sdsId),
      rebuildStatus: () => service().rebuildStatus(),
      sdcQosStats: (sdcId) => service().sdcQosStats(sdcId),
      sdcLatencyWindow: (sdcId, volumeId) => service().sdcLatencyWindow(sdcId, volumeId),
      sdcAddress: (sdcId) => service().sdcAddress(sdcId),
      fillDefaults: () => service().fillDefaults(),
    };
  }
}

/** What the REST API asks of the MDM cluster; one MDM with its journal answers it too. */
export interface RestCluster {
  route(): RestRoute;
  /** Who answers a request served here: this MDM's name and its mastership's term (etcd revision; '0' alone). */
  identity(): { name: string; term: string };
  query(): Promise<MdmClusterView>;
  switchOwnership(to: string | null): Promise<string>;
}

/** One MDM with its embedded journal: ScaleIO's single-node mode. */
export function singleMdmCluster(options: { clusterId: string; systemName: string; name: string; wireAddress: string; apiAddress: string }): RestCluster {
  return {
    route: () => ({ kind: 'local' }),
    identity: () => ({ name: options.name, term: '0' }),
    query: () => {
      const wire = parseHostPort('wireAddress', options.wireAddress);
      const api = parseHostPort('apiAddress', options.apiAddress);
      const master: MdmView = { id: options.name, name: options.name, ips: [wire.host], managementIPs: [api.host], port: wire.port, role: 'Manager', status: 'Normal', apiAddress: options.apiAddress };
      return Promise.resolve({ id: options.clusterId, name: options.systemName, clusterMode: 'OneNode', clusterState: 'NotClustered', goodNodesNum: 1, goodReplicasNum: 1, master, slaves: [], tieBreakers: [], standbyMDMs: [] });
    },
    switchOwnership: () => Promise.reject(new MeshblockError('MB_ERR_MDM_CLUSTER_CHANGE', 'this MDM runs alone (one-node mode, its own journal): there is no other MDM to take over')),
  };
}

/** Why management is refused when etcd does not answer; the REST API says it too. */
export function noQuorumMessage(etcdError: string): string {
  return `no Master: etcd has no quorum or is unreachable from this MDM (${etcdError}); management waits, IO goes on`;
}
