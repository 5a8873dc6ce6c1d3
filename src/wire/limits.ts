// The wire connection's limits (peer.ts and the modules it is made of), each with the
// reason for its value. Units are in the names; how the limits relate is asserted below,
// when the module loads (as src/common/limits.ts does for NBD).
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

import { assert } from '../common/assert.js';
import { MiB } from '../common/units.js';
import { wireHeaderBytes, wirePayloadBytesMax } from './header.js';

/** Connection setup (HELLO, PROOF, READY) must finish in this time, or the connection is dropped. */
export const wireSetupTimeoutMs = 10_000;

/**
 * A request unanswered after this long fails with MB_ERR_WIRE_TIMEOUT: long enough for a
 * loaded device's worst write, short enough that an SDC fails over from a hung SDS before
 * the kernel NBD client (30 s) gives up on its own request.
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

assert(wireInflightBytesMaxDefault >= wirePayloadBytesMax, 'a full-size frame must fit in flight');
assert(wireWritableBytesMax >= 2 * (MiB + wireHeaderBytes), 'two chunk-sized replies must fit in the socket queue');
