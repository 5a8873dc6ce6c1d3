// Every limit has a name, and how limits relate is asserted when the module loads
// (after TigerBeetle's src/constants.zig). Units are in the names. One file for the NBD
// server, the wire, the SDS, the SDC and the MDM: their timeouts are only right relative
// to each other (a client must not give up the moment its server would have answered),
// and the relations are checked below, where all of them can be seen.

import { assert } from './assert.js';
import { GiB, KiB, MiB } from './units.js';

/** Largest READ/WRITE payload served; larger requests get EINVAL (payload discarded). */
export const nbdRequestBytesMax = 32 * MiB;
/** Bytes of request payloads and reply data held per connection before we stop reading. */
export const nbdInflightBytesMax = 64 * MiB;
/** Requests in flight per connection before we stop reading. */
export const nbdInflightRequestsMax = 1024;
/** Reply bytes queued in the socket (a client that stops reading) before we stop reading. */
export const nbdWritableBytesMax = 8 * MiB;
/**
 * Replies queued behind a socket that stopped draining, before we stop reading. Counted
 * as well as bytes: each queued write costs Node a few hundred bytes of bookkeeping, so a
 * flood of 16-byte error replies would pass the byte bound with ~100 MiB of overhead.
 */
export const nbdBlockedRepliesMax = 4096;
/** Option data we buffer; longer options are skipped unread and answered NBD_REP_ERR_TOO_BIG. */
export const nbdOptionBytesMax = 64 * KiB;
/** Longest string (export name, query) the spec allows. */
export const nbdStringBytesMax = 4096;
/** Options one session may send before we decide it is a denial of service and hang up. */
export const nbdOptionCountMax = 4096;
/** A client has this long to finish the handshake. */
export const nbdHandshakeTimeoutMs = 60_000;
/**
 * After DISC, ABORT or a drain, our EOF is sent and the client has this long to hang up
 * before we close the connection ourselves.
 */
export const nbdLingerMs = 5_000;
/** Block size constraints advertised with NBD_INFO_BLOCK_SIZE. */
export const nbdBlockSizePreferredBytes = 4 * KiB;
/** BLOCK_STATUS answers with at most this many extents. */
export const nbdExtentsPerReplyMax = 2048;
/** Largest BLOCK_STATUS range we look at per request (clients ask again for the rest). */
export const nbdExtentsQueryBytesMax = 1024 * MiB;
/** How many libuv threads serve file IO unless UV_THREADPOOL_SIZE says otherwise. */
export const ioThreadsDefault = 16;

// --- the wire between SDC, SDS and MDM ----------------------------------------------------
//
//
// Both directions of a connection are bounded:
//
//   requests we send      at most wireInflightBytesMaxDefault bytes of request payload and
//                         wireRequestsInflightMax requests awaiting replies; request()
//                         waits for room, and fails with MB_ERR_WIRE_SEND_TIMEOUT, unsent,
//                         if none comes in its timeout (a peer that neither reads nor answers)
//   requests we serve     at most wireInflightBytesMaxDefault bytes of request payload plus
//                         the replies they will need, and wireRequestsInflightMax requests
//                         in their handlers; past either we stop reading the socket
//   bytes we write        at most wireWritableBytesMax bytes queued in the socket, and
//                         wireBlockedWritesMax frames written after write() returned false;
//                         past either no request is sent and none is read until 'drain'
//
// So a peer that stops reading holds at most wireInflightBytesMaxDefault +
// wireWritableBytesMax (+ one frame) of our memory per connection.

/** The fixed frame header; src/wire/header.ts lays it out and asserts its size. */
export const wireHeaderBytes = 64;
/** A frame's payload: the largest NBD request (one piece can be that big) plus room for per-op arguments, with margin. */
export const wirePayloadBytesMax = 32 * MiB + 4096;
/** Connecting to an SDS (the SDC's and the mirroring SDS's connections) gives up after this. */
export const wireConnectTimeoutMs = 10_000;
/** How often SDSs and SDCs send the MDM a heartbeat; the MDM's failure detection counts in these. */
export const heartbeatIntervalMs = 1000;
/** Reconnecting to the MDM backs off from the first to the second. */
export const mdmReconnectDelayMsMin = 200;
export const mdmReconnectDelayMsMax = 5000;
/** Connecting to the MDM gives up after this (then the next address, or the next backoff). */
export const mdmConnectTimeoutMs = 5000;
/**
 * MDM addresses an SDS or SDC may be given (`--mdm H:P[,H:P...]`): the Master and Slaves of
 * a five-node cluster, ScaleIO's largest.
 */
export const mdmAddressesMax = 5;
/**
 * A heartbeat the MDM has not answered in this long drops the connection, which then moves
 * on to the next MDM address: a Master cut off by the network sends no FIN, and without
 * this the session would wait on it for as long as TCP does (many minutes). The same
 * silence after which the MDM calls an SDC disconnected.
 */
export const mdmHeartbeatTimeoutMs = 5 * heartbeatIntervalMs;

/** Connection setup (HELLO, PROOF, READY) must finish in this time, or the connection is dropped. */
export const wireSetupTimeoutMs = 10_000;

/**
 * A request unanswered after this long fails with MB_ERR_WIRE_TIMEOUT. The default for
 * requests that name no timeout of their own (registration, MDM orders); the data path's
 * requests name theirs (sdcPieceTimeoutMs, mirrorTimeoutMs), which must fit in the kernel
 * NBD client's request timeout.
 */
export const wireRequestTimeoutMsDefault = 30_000;

/**
 * Bytes in flight per connection and direction (request payloads we sent and are waiting
 * on; request payloads and expected replies we are serving): two full-size frames, 64
 * chunks of 1 MiB, which keeps a device and a 10 GbE link busy without letting one peer
 * hold more than that of our memory.
 */
export const wireInflightBytesMaxDefault = 64 * MiB;

/**
 * Requests in flight per connection and direction. Bounds what small requests cost that
 * the byte bound does not see (a pending entry and its timer, a handler's promise):
 * NBD's own bound (nbdInflightRequestsMax) is the same, and an SDS cannot keep more
 * device IO than this useful for one client anyway.
 */
export const wireRequestsInflightMax = 1024;

/**
 * Bytes queued in the socket (written but not yet taken by the kernel) before we stop
 * sending requests and reading new ones. write() returns false past 16 KiB already, which
 * one 1 MiB reply always passes; a few chunks of queue keep the socket busy while the
 * next replies are prepared, and a peer that stops reading holds at most this much here.
 * The same value as nbdWritableBytesMax, for the same reason.
 */
export const wireWritableBytesMax = 8 * MiB;

/**
 * Frames written while the socket was not draining (reset by 'drain') before we stop as
 * above. Counted as well as bytes: each queued write costs Node a few hundred bytes of
 * bookkeeping, so a flood of small error replies would pass the byte bound with ~100 MiB
 * of overhead (as nbdBlockedRepliesMax).
 */
export const wireBlockedWritesMax = 4096;

// --- MDM: failure detection and rebuild ------------------------------------------------------

/** An SDC is called disconnected after this long without a heartbeat. */
export const sdcHeartbeatTimeoutMs = 5 * heartbeatIntervalMs;
/**
 * Failure detection default (`mdm start --sds-down-after`). An SDS silent this long (or
 * disconnected for sdsDisconnectGraceMs) is declared down and its groups fail over: client
 * IO to it stalls about this long, far inside the kernel NBD client's request timeout.
 */
export const sdsDownAfterMsDefault = 3000;
/** A connection that drops is given this long to come back before its SDS is declared down. */
export const sdsDisconnectGraceMs = 1000;
/** After an MDM restart (or a takeover), SDSs get this long (plus the down deadline) to register again. */
export const mdmRestartGraceMs = 10_000;
/**
 * A down SDS is declared out after this long (`--rebuild-after`): its copies are re-created
 * elsewhere. Back before then, it only receives what changed while it was away (a delta rebuild).
 */
export const rebuildAfterMsDefault = 60_000;
/**
 * Rebuild throttle defaults, per source SDS over all its jobs: bytes per second, and chunk
 * copies in flight (ScaleIO's "concurrent rebuild IOs"; its default is 1 per device).
 */
export const rebuildBytesPerSecondMaxDefault = 64 * MiB;
/** While clients do IO on a source SDS, its rebuilds get this much ("favor application IO"). */
export const rebuildBytesPerSecondUnderLoadDefault = 16 * MiB;
export const rebuildChunksInflightMaxDefault = 2;
/** ScaleIO's range of a pool IO priority policy's numOfConcurrentIosPerDevice. */
export const ioPriorityConcurrentIosPerDeviceMax = 20;
/** Far above any device; only there so that KiB/s x devices stays a safe integer of bytes. */
export const ioPriorityBandwidthPerDeviceKbpsMax = 100 * 1024 * 1024;
/** What a policy field never given means (ScaleIO's defaults: 1 IO per device, 10 MB/s per device). */
export const ioPriorityConcurrentIosPerDeviceDefault = 1;
export const ioPriorityBandwidthPerDeviceKbpsDefault = 10 * 1024;
/** How often a rebuild copy waiting for its pace looks again at the rate (a policy change, clients going quiet). */
export const rebuildPaceRecheckMs = 100;

// --- Checksums at rest and the scrub (docs/integrity.md) ---------------------------------

/** A pool's scrub when its policy says nothing: both copies compared, 1 MB/s per device (ScaleIO's scanner default). */
export const scrubModeDefault = 'dataComparison' as const;
export const scrubRateKBpsDefault = 1024;
/** The slowest and fastest scrub rate a pool policy may set, per device. */
export const scrubRateKBpsMin = 64;
export const scrubRateKBpsMax = 1024 * 1024;
/** A scrub pass starts at most this often (an SDS holding little loops no faster). */
export const scrubPassGapMs = 10_000;
/** A paused or paced scrub looks again this often (client IO gone quiet, a policy changed, closing). */
export const scrubIdleRecheckMs = 200;
/** Ranges bad on both copies an SDS remembers and reports (the newest). */
export const unrepairableRangesMax = 100;
/**
 * A slot not written for this long, with a flush since its last write, is closed (its
 * entry's open flag cleared); its next write first opens it again, at the cost of an
 * fdatasync. 5 s made the bench's rewrite pass pay that sync for every chunk (half the QD1
 * IOPS); open slots only cost reading them back after a power cut (openSlotsPerDeviceMax).
 */
export const slotCloseIdleMs = 60_000;
/** Open slots a device keeps at most: beyond, the least recently written durable ones are closed (at most 4 GiB to verify after a cut). */
export const openSlotsPerDeviceMax = 4096;
/** How often slots are looked at for closing. */
export const slotCloseCheckMs = 5_000;
/**
 * Free slots an SDS keeps zeroed and synced per device, in the background, so that a plain
 * first write takes one and needs no fdatasync before its entry (chunk-store.ts).
 */
export const zeroedSlotsReadyMax = 32;
/** Slots whose block checksums an SDS keeps in memory (1 KiB each for 1 MiB chunks): 64 MiB, 64 GiB of chunks. */
export const checksumCacheSlotsMax = 65_536;
/**
 * Checksum areas changed in memory and not yet written, per device, before they are written
 * without waiting for a flush (chunk-store.ts markAreaDirty): bounds the work a flush has
 * left and the cache entries that cannot be evicted.
 */
export const dirtyAreasPerDeviceMax = 1024;
/**
 * IOs in flight on one device's Linux AIO ring (device-io.ts); more go to the thread pool.
 * Each ring takes this many of the host's fs.aio-max-nr (65,536 by default).
 */
export const aioDepth = 256;
/** Idle aligned buffers kept per size class for O_DIRECT IO (aligned-buffers.ts): at most 8 x 2 MiB of the largest. */
export const alignedIdlePerClassMax = 8;
/** A fill order not answered by the group being in sync is repeated after this long. */
export const rebuildOrderRepeatMs = 30_000;
/** A pool is planned again for orphaned one-copy groups at most this often. */
export const poolRepairIntervalMs = 30_000;
/** Rebuild completions are applied in batches, one journal record per pool. */
export const rebuildSyncedBatchMs = 250;
/** An order to an SDS (add a device, take a map, rebuild, an SDC's view) not answered in this has failed. */
export const sdsOrderTimeoutMs = 30_000;
/** The MDM's journal is compacted into a snapshot after this many records. */
export const journalCompactAfterRecords = 1000;

// --- MDM cluster (Master, Slaves, Tie-Breakers on etcd) ------------------------------------

/**
 * The Master's etcd lease: a Master that cannot renew it this long (dead, paused,
 * partitioned) loses the mastership, and a Slave takes over. etcd counts it in whole seconds.
 */
export const mdmMasterLeaseMs = 3000;
/** A Master stops giving orders this long before its lease could have run out in etcd. */
export const mdmMasterLeaseMarginMs = 500;
/** A Slave reads the Master's new commands this often: it is hot, a takeover replays at most these. */
export const mdmFollowIntervalMs = 200;
/** An MDM that is not Master checks for a vacant mastership this often. */
export const mdmCampaignIntervalMs = 250;
/** A planned switch reserves the mastership for the MDM named this long; the others hold back. */
export const mdmHandoverMs = 5000;
/** A Slave forwarding a request checks this often that the Master it waits for is still the Master. */
export const restForwardRecheckMs = 250;
/** An etcd call not answered in this has failed (a partitioned member must not hold a call). */
export const etcdCallTimeoutMs = 2000;
/** Commands read from etcd in one request. */
export const etcdLogReadBatchMax = 500;
/** The largest value stored in etcd: its requests are at most 1.5 MiB by default. */
export const etcdValueBytesMax = MiB;

// --- snapshots (V-Trees) -------------------------------------------------------------------

/** Snapshots one V-Tree may hold, by default (ScaleIO 2.0's 31) and at most (ScaleIO 3's 127). */
export const snapshotsPerVtreeDefault = 31;
export const snapshotsPerVtreeMax = 127;
/**
 * Generations one V-Tree may hold: its volumes' heads and the frozen generations they share.
 * Removing snapshots merges or drops frozen ones, so a live tree stays far below this.
 */
export const vtreeGenerationsMax = 4 * (snapshotsPerVtreeMax + 1);
/** Volumes one snapshotVolumes call (a consistency group) may name. */
export const snapshotGroupVolumesMax = 64;
/**
 * A group snapshot's barrier: the Master commits it only if every SDS of the pools confirmed
 * the freeze (its writes to those V-Trees drained) within this long after the freeze was
 * committed; otherwise the snapshot is aborted and nothing is created.
 */
export const snapshotBarrierTimeoutMs = 3000;
/**
 * An SDS never lifts a freeze by itself: only the Master knows whether the group was committed
 * (the frozen generation is then a snapshot's) or aborted, and a write taken into a committed
 * snapshot's generation would change the snapshot. A freeze held this long is logged, as the
 * sign of an MDM lost in the middle of a barrier (the next Master aborts or publishes it).
 */
export const sdsFreezeWarnMs = 10_000;
/** An SDC retries a write refused with Frozen after this long (and again until its piece deadline). */
export const sdcFrozenRetryMs = 5;

/** Snapshot bytes are recounted when asked for, at most this often (a walk over the listed trees' chunks). */
export const snapshotBytesRefreshMs = 10_000;

/**
 * A collection also runs this often while the map stands still: copies on write make keys
 * garbage without any map change (a chunk every head has rewritten since the snapshot).
 */
export const generationCollectIntervalMs = 60_000;

/** Times the barrier's map is sent again to an SDS that refused it as older than its own. */
export const barrierMapAttemptsMax = 5;

/**
 * The pause between two sends of a piece refused with Frozen grows from sdcFrozenRetryMs up
 * to this: a barrier that takes its whole timeout (snapshotBarrierTimeoutMs) then costs
 * each waiting piece a few hundred sends, not six hundred, while one that takes a few
 * milliseconds still costs the client only a few milliseconds.
 */
export const frozenRetryDelayMsMax = 8 * sdcFrozenRetryMs;

// --- SDS -----------------------------------------------------------------------------------

/**
 * How long a primary waits for its mirror before failing the client's write (MirrorFailed).
 * Longer than the MDM takes to declare a silent secondary down (sdsDownAfterMsDefault plus
 * a heartbeat), so a hung secondary is usually dropped from the map, and the write goes on
 * without it, before this fires.
 */
export const mirrorTimeoutMs = 10_000;
/** Client IO this recent makes the SDS busy: rebuilds run at their under-load rate. */
export const sdsClientQuietMs = 200;
/** Stale chunks are freed this long after the map that makes them stale (if still current). */
export const staleCollectDelayMs = 5000;
/**
 * A full rebuild job offers its cursor after this many chunks or this long, whichever comes
 * first: each save costs a flush on the target and a small file write here, and a kill -9
 * loses at most this much progress.
 */
export const rebuildCursorSaveChunks = 64;
export const rebuildCursorSaveIntervalMs = 1000;
/** Chunk copies one rebuild job has in flight at most, whatever the MDM orders. */
export const sdsRebuildChunksInflightMax = 64;
/** Rebuild jobs copying at once; the others wait their turn (still listed as running). */
export const sdsRebuildsRunningMax = 8;
/** A target lists a group's chunks within this (it may be busy with other rebuilds). */
export const listGroupTimeoutMs = 30_000;
/** Rebuild jobs listed in Stats, finished ones included. */
export const sdsRebuildsKeptMax = 1024;

// --- SDC -----------------------------------------------------------------------------------

/** A map asked of the MDM must come within this; else the SDC goes on with its cached map. */
export const sdcMapRequestTimeoutMs = 5000;
/** Attempts per chunk piece before the client gets EIO (with the backoff, about 15 s of pauses). */
export const sdcPieceAttemptsMax = 12;
/** The pause between attempts doubles from 200 ms up to this. */
export const sdcRetryDelayMsMax = 2000;
/**
 * One attempt of a piece waits this long for its SDS. Longer than mirrorTimeoutMs, so that
 * a primary whose mirror hangs answers MirrorFailed (and the SDC retries on a fresh map)
 * before the SDC gives up on the primary itself; it was 10 s, equal to mirrorTimeoutMs,
 * so both gave up at once. A primary that dies is noticed sooner: its connection drops,
 * or the MDM's new map drops it from the SDC's connections.
 */
export const sdcPieceTimeoutMs = 15_000;

/**
 * QoS (docs/qos.md, src/nbd/qos.ts): a throttled volume's head waiter is looked at again at
 * least this often, and a bucket without burst holds this long's worth of its rate. Short
 * enough that a limited volume's IO comes evenly through each second instead of in a rush at
 * its start (the issue asks for ≤ 50 ms), long enough that a limited volume costs at most
 * ~20 timers a second when its waiters need more than one tick's tokens.
 */
export const qosTickMs = 50;
/** ScaleIO's floor for an IOPS limit (it refuses 1 to 10); kept so that ScaleIO clients see the same rules. */
export const qosIopsLimitMin = 11;
/** Bandwidth limits and bursts are set in whole MiB/s, as ScaleIO takes them (KiB/s on the wire). */
export const qosBandwidthStepKbps = 1024;
/** The longest burst, in seconds of saved tokens (an hour; librbd sets no bound, a VM's boot needs seconds). */
export const qosBurstSecondsMax = 3600;

// --- the kernel NBD client -----------------------------------------------------------------

/** `meshblock attach` runs `nbd-client -t` with this: a request unanswered this long fails with EIO. */
export const kernelNbdRequestTimeoutMs = 30_000;


// --- wire operations -----------------------------------------------------------------------

/** Chunks one Allocation request asks about (one byte each in the reply: 1 MiB). */
export const allocationChunkCountMax = 1 << 20;
/** Placement groups one pool may have; the map, cached by every SDC and SDS, grows with them. */
export const pgCountMax = 1 << 20;
/** How much of a refusal that cannot be read goes into the message that replaces it. */
export const refusalQuoteCharsMax = 200;

// --- MDM: the model and placement ----------------------------------------------------------

/** Placement groups a new pool gets unless told; fixed at creation (see pgCountMin). */
export const pgCountDefault = 4096;
/**
 * Groups per device a pool is created with, at least. Then a device of average size holds ≥ 128
 * copies, so rounding its share to whole copies costs under 1% of balance (6% for a device of an
 * eighth the average size), and its copies are paired with ~100 other devices, so a rebuild reads from
 * and writes to most of the pool. More groups buy little and grow the map every SDC caches.
 */
export const pgPerDeviceMin = 64;
/**
 * Fewest groups of any pool. The group count is fixed at creation (changing it would rehash
 * every chunk), so a small pool is given room to grow: 4096 groups still balance 64 devices.
 */
export const pgCountMin = 4096;
/**
 * How far a device's primaries may stray from half its copies before roles are swapped to
 * bring it back within one. Roles move no data, but every swap is a map change (a primary
 * handover on two SDSs), so small drifts, such as the promotions of a failure, are let be.
 */
export const primaryImbalanceMax = 2;
/** Longest name of any object (ScaleIO's limit: 31 characters); the SDS superblock holds one. */
export const nameBytesMax = 31;
/** Capacity held back in a pool to rebuild a failed SDS into (ScaleIO's default). */
export const sparePercentDefault = 10;
/** Volume sizes are rounded up to a multiple of this (ScaleIO allocates in 8 GiB units). */
export const volumeGranularityBytesDefault = 8 * GiB;

// --- MDM: the journal ----------------------------------------------------------------------

/** Largest JSON payload of one record. The MDM's changes are small; this catches a runaway. */
export const journalRecordBytesMax = 16 * MiB;
/** Largest JSON payload of a snapshot (V8 strings end at ~512 MiB; stay well below). */
export const journalSnapshotBytesMax = 256 * MiB;
/**
 * Frame bytes accepted by append() but not yet on disk. Past it, appends are refused with
 * JournalBusyError (the REST layer answers "try again") rather than queued without bound.
 */
export const journalPendingBytesMax = 64 * MiB;

// --- MDM: the REST API and its logins ------------------------------------------------------

/** Largest request body accepted; larger ones get 413. */
export const restBodyBytesMax = 1 * MiB;
/**
 * A body over the limit is still read (and dropped) up to this many bytes, so that the
 * client, still sending, gets to read the 413 instead of a reset connection; beyond it the
 * connection is cut.
 */
export const restDiscardBytesMax = 16 * MiB;
/** A wrong password is answered this long after the request came in, whatever scrypt took. */
export const loginFailureDelayMs = 1000;
/**
 * Logins being checked (or delayed) at once; more get 429. Bounds both the guesses per
 * second and scrypt's memory (32 MiB each).
 */
export const loginsInflightMax = 8;
/** A request must arrive in full within this. */
export const restRequestTimeoutMs = 60_000;
export const restHeadersTimeoutMs = 20_000;
/** Longest device path accepted (Linux PATH_MAX). */
export const devicePathBytesMax = 4096;
/** Passwords shorter than this are refused when the file is made. */
export const adminPasswordBytesMin = 8;
/** Longer passwords are refused: scrypt would take them, but nobody types 1 KiB. */
export const adminPasswordBytesMax = 1024;
/** A token unused this long is forgotten (ScaleIO: 8 hours). */
export const adminTokenIdleMs = 8 * 60 * 60 * 1000;
/** Sessions held at once; at the bound the least recently used one is dropped. */
export const adminTokensMax = 1024;
/** openssl takes well under a second; this only guards against a hung binary. */
export const opensslTimeoutMs = 60_000;

// --- the etcd members of an MDM cluster (`meshblock etcd start`) ---------------------------

/**
 * Raft heartbeat and election timeout of each member: etcd's defaults, passed explicitly
 * because the MDM's failover time is built on them. On a LAN (round trips well under 10 ms)
 * a dead leader is replaced about one election timeout after its last heartbeat.
 */
export const etcdHeartbeatIntervalMs = 100;
export const etcdElectionTimeoutMs = 1000;
/** Backend (bbolt) quota: past it etcd raises NOSPACE and takes only reads and deletes. */
export const etcdBackendBytesMax = 2 * GiB;
/** Largest request a member accepts (etcd's default, 1.5 MiB): an MDM's writes are far smaller. */
export const etcdRequestBytesMax = 1.5 * MiB;
/** Revisions kept by auto-compaction (revision mode): history for watchers that reconnect. */
export const etcdCompactionRevisionsKeptMin = 1000;
/** After SIGTERM is forwarded, etcd has this long to stop before it is killed. */
export const etcdStopTimeoutMs = 10_000;

/**
 * The management CLI's connection to one MDM's REST API gives up after this and tries the
 * next API address: a host that is down answers nothing, and the CLI's request timeout
 * (minutes, for commands that wait on an SDS) must not be spent waiting for the TCP connect.
 */
export const apiConnectTimeoutMs = 5000;

// --- SDS devices ---------------------------------------------------------------------------

/** Smaller devices are refused: the metadata area alone takes a few MiB. */
export const deviceBytesMin = 16 * MiB;
/** A pool's chunk size unless told: the unit of placement, copy and rebuild. */
export const chunkBytesDefault = 1 * MiB;
/** The chunk store's IO rates (in Stats) are averaged over this window. */
export const rateWindowMs = 1000;

// --- device IO and buffers (every process) -------------------------------------------------

/** Reads up to this size try RWF_NOWAIT on the event loop; larger copies go to the pool. */
export const nowaitReadBytesMax = 128 * 1024;
/** Writes up to this size are tried on the event loop. */
export const inlineWriteBytesMax = 64 * 1024;
/** An inline write that took longer than this was blocked, not copying... */
export const inlineWriteStallMs = 2;
/** ...and writes go to the thread pool for this long. */
export const inlineWriteBackoffMs = 5_000;
/** Idle pooled memory kept per size class; more is returned to the allocator. */
export const idleBytesPerClassMax = 64 * MiB;

// --- how the limits relate -----------------------------------------------------------------

assert(nbdInflightBytesMax >= 2 * nbdRequestBytesMax, 'a full-size request must fit in flight with another');
assert(nbdOptionBytesMax >= 2 * nbdStringBytesMax + 16, 'a GO option with the longest name must fit');
assert(nbdRequestBytesMax <= 0xffffffff - 8, 'a read reply chunk length must fit in u32');
assert(nbdLingerMs < nbdHandshakeTimeoutMs, 'an ABORTed session must not outlive the handshake timeout');
assert(wireInflightBytesMaxDefault >= wirePayloadBytesMax, 'a full-size frame must fit in flight');
assert(wireWritableBytesMax >= 2 * (MiB + wireHeaderBytes), 'two chunk-sized replies must fit in the socket queue');
assert(wirePayloadBytesMax >= nbdRequestBytesMax + 4096, 'the largest NBD request fits in one wire frame with its arguments');
assert(wireRequestsInflightMax >= nbdInflightRequestsMax, 'an SDC can have as many requests to one SDS in flight as one NBD connection sends');
assert(sdcPieceTimeoutMs > mirrorTimeoutMs, "a primary's MirrorFailed reaches the SDC before the SDC gives up on that primary");
assert(sdcPieceTimeoutMs < kernelNbdRequestTimeoutMs, "one SDC attempt ends (and is retried) before the kernel client gives up on the request");
assert(sdcMapRequestTimeoutMs < sdcPieceTimeoutMs, 'a map refresh is quicker than waiting out a piece');
assert(heartbeatIntervalMs * 2 <= sdsDownAfterMsDefault, 'one late heartbeat must not get an SDS declared down');
assert(sdsDisconnectGraceMs < sdsDownAfterMsDefault, 'a dropped connection is a surer sign than silence, and acted on sooner');
assert(sdcHeartbeatTimeoutMs > 2 * heartbeatIntervalMs, 'one late heartbeat must not disconnect an SDC');
assert(sdsDownAfterMsDefault + heartbeatIntervalMs < mirrorTimeoutMs, 'the MDM declares a silent secondary down before its primary gives up mirroring to it');
assert(sdsDownAfterMsDefault + sdcMapRequestTimeoutMs + sdcRetryDelayMsMax < kernelNbdRequestTimeoutMs, 'a failover (declared down, new map fetched, one retry pause) fits in the kernel client request timeout');
assert(sdsDownAfterMsDefault < rebuildAfterMsDefault, 'an SDS is down before it is out');
assert(mdmHeartbeatTimeoutMs > 2 * heartbeatIntervalMs, 'one late heartbeat reply must not drop the MDM connection');
assert(mdmReconnectDelayMsMax + heartbeatIntervalMs < mdmRestartGraceMs, 'after an MDM restart, SDSs reconnect (at their slowest backoff) within the restart grace');
assert(rebuildSyncedBatchMs < heartbeatIntervalMs, 'finished rebuilds are recorded within a health tick');
assert(mdmMasterLeaseMs % 1000 === 0 && mdmMasterLeaseMs >= 2000, 'etcd leases are whole seconds (and a Master renews a few times per lease)');
assert(mdmMasterLeaseMarginMs * 4 <= mdmMasterLeaseMs, 'the margin leaves most of the lease to the Master');
assert(etcdCallTimeoutMs <= mdmMasterLeaseMs, 'one attempt of an etcd call ends within a lease (the etcd3 client may retry it on another member)');
assert(mdmFollowIntervalMs < heartbeatIntervalMs && mdmCampaignIntervalMs < heartbeatIntervalMs, 'a Slave follows and watches for a vacant mastership faster than heartbeats');
assert(mdmMasterLeaseMs + mdmCampaignIntervalMs + etcdCallTimeoutMs < mdmRestartGraceMs, 'a takeover completes within the restart grace SDSs have to reconnect');
assert(etcdValueBytesMax + 64 * KiB <= 1.5 * MiB, "a value and its request's framing fit in etcd's default request limit");
assert(pgCountMin <= pgCountDefault && pgCountDefault <= pgCountMax, 'a default pool has a group count the planner accepts');
assert(journalRecordBytesMax <= journalPendingBytesMax && journalPendingBytesMax <= journalSnapshotBytesMax, 'a record fits in the pending bound, which fits in a snapshot');
assert(restBodyBytesMax <= restDiscardBytesMax, 'an over-limit body is read at least as far as the limit before the 413');
assert(restHeadersTimeoutMs <= restRequestTimeoutMs, 'headers come before the whole request');
assert(etcdElectionTimeoutMs >= 5 * etcdHeartbeatIntervalMs, 'etcd refuses an election timeout under five heartbeats');
assert(etcdRequestBytesMax <= etcdBackendBytesMax, 'one request fits in the backend');
assert(deviceBytesMin >= 4 * chunkBytesDefault, 'the smallest device holds a few chunks after its metadata');
assert(inlineWriteBytesMax <= nowaitReadBytesMax, 'what is written inline is small enough to read inline');
assert(snapshotBarrierTimeoutMs < sdsFreezeWarnMs, 'a freeze is logged only once no barrier can still be waiting for it');
assert(snapshotsPerVtreeDefault <= snapshotsPerVtreeMax, 'the default snapshot limit is within the maximum');
assert(qosTickMs <= 50 && qosTickMs * 4 <= heartbeatIntervalMs, 'a throttled volume is re-checked often enough that IO is not bunched, and a live limit change acts well within a second');
assert(snapshotBarrierTimeoutMs + frozenRetryDelayMsMax < sdcPieceTimeoutMs, 'a piece refused with Frozen waits out a whole barrier before its deadline (a freeze held longer fails it: an IO error, never a write into a snapshot)');
assert(rebuildPaceRecheckMs < sdsClientQuietMs, 'a paced rebuild copy sees the SDS go quiet before it would be busy again');

// --- issue 22: CPU per IO ---------------------------------------------------------------------

/**
 * Payloads from this size on come from the buffer pool (common/buffer-pool.ts), 4 KiB IO
 * included: Buffer.allocUnsafe serves those from 128 KiB slabs, which V8 counts as
 * external memory and answers with full collections (about one a second per process under
 * 4k randrw: 10-12% of the SDC's busy time). Pooled, the same few buffers go round.
 */
export const pooledBytesMin = 4 * KiB;
assert(pooledBytesMin <= chunkBytesDefault && (pooledBytesMin & (pooledBytesMin - 1)) === 0, 'chunk-sized payloads are pooled, in power-of-two classes');

// --- issue 22: every core (sds start --shards, src/cli/sds-shards.ts) --------------------------

/**
 * The most shard processes one `sds start --shards N` runs, and `install --sds-shards` asks
 * for: a shard is a whole SDS (its own port, data dir, MDM connection, heap), worth its
 * memory only with a core and a device of its own; 64 covers a 128-core host at the auto
 * choice of half the cores. Shard names add `.64` to the SDS name, which must still fit
 * nameBytesMax.
 */
export const sdsShardsMax = 64;
assert(`.${sdsShardsMax}`.length < nameBytesMax, 'a shard suffix leaves room for an SDS name');
/** A shard that died after it was ready is restarted after this, doubling per restart... */
export const sdsShardRestartDelayMsMin = 1_000;
/** ...up to this. */
export const sdsShardRestartDelayMsMax = 30_000;
/** A shard that stayed up this long is restarted after the shortest delay again. */
export const sdsShardStableMs = 60_000;
assert(sdsShardRestartDelayMsMin < sdsShardRestartDelayMsMax && sdsShardRestartDelayMsMax < sdsShardStableMs, 'a shard that keeps dying backs off; one that stayed up starts over');

/**
 * Bytes of client IO one SDS process holds at once, across all its client connections
 * (request payloads and the replies being prepared; `sds start --memory-budget`,
 * wire/serving-budget.ts): 256 chunks of 1 MiB keep any device busy, and a XenServer Dom0
 * of 4 GiB can give that to a few shards. Each connection is still bounded by itself
 * (wireInflightBytesMaxDefault); the budget bounds their sum.
 */
export const sdsMemoryBudgetBytesDefault = 256 * MiB;
/** The smallest budget `sds start --memory-budget` takes: any smaller only serializes clients. */
export const sdsMemoryBudgetBytesMin = 1 * MiB;
assert(sdsMemoryBudgetBytesMin <= sdsMemoryBudgetBytesDefault && sdsMemoryBudgetBytesDefault >= wireInflightBytesMaxDefault, 'the default budget holds at least one busy connection');

// --- a rebuild that fails (rebuild.ts, mdm/health.ts; docs/rebuild-policy.md) ------------------

/**
 * Chunks one rebuild job may fail to copy (a bad source copy, a target that refuses the copy)
 * before it stops: it copies the rest of its group first, so one bad chunk leaves the rest
 * protected; a job failing this often is failing for a reason bigger than a chunk.
 */
export const rebuildChunkFailuresMax = 16;
/** A group whose rebuild job failed on a chunk is ordered again after this, doubling per failure... */
export const rebuildRetryDelayMsMin = 1_000;
/** ...up to this: a copy that keeps failing is tried (and logged) at most this often. */
export const rebuildRetryDelayMsMax = 60_000;
assert(rebuildRetryDelayMsMin < rebuildRetryDelayMsMax && rebuildRetryDelayMsMax <= 2 * rebuildOrderRepeatMs, 'a failing rebuild backs off, and is never left longer than a lost order');
/** Failing groups the MDM lists by name in its rebuild status (dashboard, REST); all are counted. */
export const rebuildFailingShownMax = 64;

/** `meshblock bundle` (and the installer) packing the runtime bundle (about 40 MiB gzipped, some seconds): tar may take this long. */
export const bundleTarTimeoutMs = 10 * 60_000;

// --- the CSV installer (hostsetup/installer.ts, `meshblock install --parallel`) --------------

/**
 * Hosts the installer works on at once in a phase: each is an SSH connection, a bundle upload
 * (about 40 MiB) and the host's own commands; 8 keeps this machine's uplink and CPU busy
 * without a hundred-host run opening a hundred uploads at once.
 */
export const installParallelDefault = 8;
/** The most `install --parallel` takes: past it this machine, not the hosts, is the bound. */
export const installParallelMax = 64;
assert(installParallelDefault >= 1 && installParallelDefault <= installParallelMax, 'the default parallelism is one install --parallel accepts');
/**
 * The longest script the installer passes as one `sh -c` argument (files put in one command
 * carry their text in it): Linux refuses a single argument over 128 KiB (MAX_ARG_STRLEN).
 * The files put are certificates, keys, a password, a secret and a wrapper: a few KiB.
 */
export const installScriptBytesMax = 96 * KiB;

// --- Prometheus metrics (common/metrics.ts; docs/metrics.md) ----------------------------------

/** A metrics scrape (GET /metrics) that takes longer than this is cut: Prometheus's own default timeout is 10 s. */
export const metricsScrapeTimeoutMs = 10_000;
/** The MDM asks its cluster (etcd) for the MDM cluster's state at a scrape; no answer within this is reported as NoQuorum. */
export const metricsClusterQueryTimeoutMs = 3_000;
assert(metricsClusterQueryTimeoutMs < metricsScrapeTimeoutMs, 'the cluster query fits in a scrape');

// --- the event log and SNMP traps (mdm/events.ts, mdm/snmp-traps.ts; docs/events.md) ----------

/** Events the MDM keeps (the oldest go first): a year of a busy cluster's failures, a few MB. */
export const eventLogMax = 10_000;
/** The embedded store writes two files of this many events each, the older one replaced when the newer is full. */
export const eventFileEventsMax = eventLogMax / 2;
assert(Number.isInteger(eventFileEventsMax) && 2 * eventFileEventsMax === eventLogMax, 'the two event files hold the log exactly');
/** Events one GET /api/events answers with at most (and the default with no `limit`). */
export const eventsPageMax = 1_000;
/** A follower's long poll (GET /api/events?wait=S) waits at most this long, well within restRequestTimeoutMs. */
export const eventsWaitMsMax = 25_000;
assert(eventsWaitMsMax < restRequestTimeoutMs, 'a long poll ends before the REST request timeout');
/** How often the Master compares the model with what the event log last said (SDS down/up, devices, rebuild, capacity). */
export const eventWatchIntervalMs = 1_000;
/** A pool's used share of its usable capacity that raises a capacityHigh event (ScaleIO's default high threshold)... */
export const capacityHighPercent = 80;
/** ...and a capacityCritical event (ScaleIO's default critical threshold). */
export const capacityCriticalPercent = 90;
assert(capacityHighPercent < capacityCriticalPercent && capacityCriticalPercent < 100, 'capacity thresholds in order');
/** An event's message is cut to this many characters (a user name in a refused login comes from anyone). */
export const eventMessageCharsMax = 512;
/** `mdm start --snmp-trap` may name this many receivers. */
export const snmpTrapReceiversMax = 16;

/**
 * A SysV init script's stop (`/etc/init.d/meshblock-ROLE stop`, src/hostsetup/service-units.ts)
 * waits this long for the daemon to drain and exit after SIGTERM before it kills it: systemd's
 * default TimeoutStopSec, so a host stops its daemons alike under either init system.
 */
export const initScriptStopWaitSeconds = 90;

/**
 * `sdc start --attach-mapped`: how often the attacher looks again at what is mapped and what is
 * in use, retrying a detach refused because the device was in use and an attach that failed.
 */
export const attachRetryMs = 2_000;

// --- the web dashboard (src/mdm/web/, web/; docs/web-dashboard.md) ---------------------------

/** The dashboard's login body ({"username", "password"}): a password is at most adminPasswordBytesMax. */
export const webLoginBodyBytesMax = 4 * KiB;
assert(webLoginBodyBytesMax > adminPasswordBytesMax + 128, 'a login body holds the longest password');
/** A static file of the dashboard (its own and the vendored preact, htm, uPlot) is at most this big. */
export const webStaticFileBytesMax = 2 * MiB;

// --- the placement map's compact encoding (src/wire/map-codec.ts; docs/map-encoding.md) ------

/**
 * An encoded map or delta is at most this big: a wire payload. A map of 1,024 SDSs × 4 devices
 * at pgCountMax groups is ~4 MiB encoded, so this leaves room for several such pools.
 */
export const mapEncodedBytesMax = wirePayloadBytesMax;
/** SDSs in one map: far above ScaleIO's per-system maximum, there only to bound a decoder. */
export const mapSdsCountMax = 65_536;
/** Pools in one map: far above any configuration, there only to bound a decoder. */
export const mapPoolsMax = 4_096;
/** V-Trees with snapshots in one map (each is ≥ 15 bytes encoded, so the byte bound comes first). */
export const mapVtreesMax = 1 << 20;
/** An SDS address (HOST:PORT) in an encoded map: a DNS name is at most 253 characters. */
export const mapAddressBytesMax = 512;

/**
 * `sdc start --attach-mapped` on a host that cannot attach at all (no nbd kernel module, no
 * /dev/nbdN, no nbd-client): attaches are tried again this often (not every attachRetryMs: each
 * try runs modprobe), while the SDC serves the volumes over NBD all along.
 */
export const attachUnavailableRetryMs = 10_000;
assert(attachUnavailableRetryMs >= attachRetryMs, 'a host without nbd is retried no more often than a pass');

// --- bad peers at the MDM (src/mdm/peer-guard.ts; issue 23 "Bad input") ----------------------
//
// The wire layer bounds what one connection may hold (bytes and requests in flight, the
// socket queue, setup time). These bound what a peer that knows the secret may make the
// MDM do across connections: reconnect in a loop, register in a loop, send enormous
// heartbeats. Connections that stay up are never charged: the fleet simulator's thousands
// of peers from one address (and a host's shards after an MDM restart) connect freely.

/** Devices one SDS may have (ScaleIO's limit, 64): a registration claiming more is refused. */
export const sdsDevicesMax = 64;
/**
 * An MDM request's payload (registrations, RebuildDone, GetMap), heartbeats excepted, is
 * refused unread above this: a registration of sdsDevicesMax devices with the longest paths
 * (devicePathBytesMax) is ~270 KB; a real one a few KB.
 */
export const mdmRequestBytesMax = 512 * KiB;
/**
 * A heartbeat's payload (an SDS's stats, an SDC's QoS list) is refused unread above this. A
 * real SDS (4 devices) listing 1,768 failed rebuild jobs sent 708 KB (measured); an SDS lists
 * every waiting job, so 4 MiB (~11,000 jobs) is room, not a guess at the most.
 */
export const mdmHeartbeatBytesMax = 4 * MiB;
/** A wire connection to the MDM that ends within this of being accepted is churn (a reconnect loop's connection). */
export const mdmShortConnectionMs = 10_000;
/** Short connections one remote address may make in a burst; past it the MDM refuses its new connections at accept... */
export const mdmChurnPerAddressBurstMax = 64;
/** ...until its allowance refills at this many per second. */
export const mdmChurnPerAddressPerSecond = 5;
/**
 * Connections one remote address may hold open at once: the fleet simulator holds up to
 * fleetPeersMax SDSs and as many SDCs from one address; a real host holds sdsShardsMax + 1.
 */
export const mdmConnectionsPerAddressMax = 8192;
/** Registrations one SDS id (or SDC guid) may make in a burst; past it the MDM refuses them (MB_ERR_PEER_THROTTLED)... */
export const mdmRegistrationsPerPeerBurstMax = 8;
/** ...until its allowance refills at one per this many ms. */
export const mdmRegistrationRefillMs = 10_000;
/** Addresses and peer ids the guard tracks at once; past it an unknown one is refused (bounded memory). */
export const mdmGuardKeysMax = 65_536;
/** A refusal of the same kind for the same peer or address is logged at most this often (the count of those not logged goes with it). */
export const mdmRefusalLogIntervalMs = 60_000;
assert(mdmRequestBytesMax <= mdmHeartbeatBytesMax && mdmHeartbeatBytesMax <= wirePayloadBytesMax, 'the MDM request bounds are within a wire frame');
assert(mdmRequestBytesMax >= sdsDevicesMax * (devicePathBytesMax + 256), 'a registration of the most devices with the longest paths fits');
assert(mdmConnectionsPerAddressMax >= sdsShardsMax + 1 && mdmChurnPerAddressBurstMax >= sdsShardsMax, "a host's shards and SDC connect (and fail to, at once) within an address's bounds");
assert(mdmRegistrationRefillMs >= 2 * mdmReconnectDelayMsMax && mdmRegistrationRefillMs <= mdmRestartGraceMs, 'a throttled peer retries (at its slowest backoff) a few times per allowance, and one allowance comes within the restart grace');
assert(mdmShortConnectionMs >= wireSetupTimeoutMs, 'a connection that never finished setup is short');

/** Frames in one binary map update on the wire (MdmOp.GetMapBinary, SdsOp.SetMapBinary, SdcOp.SetMap): one full map or a chain of deltas. */
export const mapUpdateDeltasMax = 64;
/** One-epoch map deltas the MDM keeps for peers behind (MapUpdates): a peer further behind gets the whole map. */
export const mapDeltasKept = 16;
assert(mapDeltasKept <= mapUpdateDeltasMax, 'every chain the MDM keeps fits one update');

/**
 * The health loop decides sdsDown or sdsOut for an SDS once, then not again for this long while
 * the first may still wait in the MDM's command queue and nothing was heard of the SDS since:
 * at 1,024 SDSs the queue (re-plans, maps to every peer) lagged by minutes, and deciding them
 * every tick queued thousands of copies, each a journal record and a copy of the pools to undo
 * (5 s was still too short); an sdsDown decided on stale news could also take down an SDS that
 * had registered again since. Past this, one that did not take (an sdsOut refused for want of
 * room) is decided again.
 */
export const healthCommandRepeatMs = 30_000;
