// Every limit has a name, and how limits relate is asserted when the module loads
// (after TigerBeetle's src/constants.zig). Units are in the names.

import { assert } from './assert.js';
import { KiB, MiB } from './units.js';

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

assert(nbdInflightBytesMax >= 2 * nbdRequestBytesMax, 'a full-size request must fit in flight with another');
assert(nbdOptionBytesMax >= 2 * nbdStringBytesMax + 16, 'a GO option with the longest name must fit');
assert(nbdRequestBytesMax <= 0xffffffff - 8, 'a read reply chunk length must fit in u32');
assert(nbdLingerMs < nbdHandshakeTimeoutMs, 'an ABORTed session must not outlive the handshake timeout');
