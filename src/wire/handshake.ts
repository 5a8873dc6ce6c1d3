// Connection setup: both ends prove that they know the cluster secret without sending it
// (mutual challenge-response, HMAC-SHA256 over both nonces):
//
//   connector                                   acceptor
//   HELLO  { role, name, nonceC }        --->
//                                        <---   HELLO { role, name, nonceS, proofS }
//   PROOF  { proofC }                    --->                 proofS = HMAC(secret, "acceptor" | nonceC | nonceS)
//                                        <---   READY {}      proofC = HMAC(secret, "connector" | nonceS | nonceC)
//
// Each side checks the other's proof with a constant-time compare; a peer that fails is
// told (status AUTH_FAILED) and dropped, and the failure is logged on both sides.
//
// HELLO payload:
//
//   offset  size  field         purpose and limits
//   ------  ----  ------------  ---------------------------------------------------------------
//        0    32  nonce         fresh random bytes: a proof is good for this connection only
//       32     2  proofBytes    0 in the connector's HELLO, 32 (HMAC-SHA256) in the acceptor's
//       34     n  proof         the acceptor's proof (above)
//     34+n  rest  identity      JSON { role, name }: who the sender says it is, proven by the proof
//
// This module does no IO of its own: it speaks through a HandshakeLink (the WirePeer's
// frame writer and reader), so the same steps run over any connection.

import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Logger } from 'pino';
import { WireError, WireStatus, type WireHeader } from './header.js';

/** Operations below 16 belong to connection setup; the rest are defined by their users. */
export const WireOp = {
  Hello: 1,
  Proof: 2,
  Ready: 3,
} as const;

/** The first op a service may use; below it, setup's. */
export const wireServiceOpMin = 16;

const nonceBytes = 32;

export type PeerRole = 'sdc' | 'sds' | 'mdm' | 'test';
const peerRoles: readonly string[] = ['sdc', 'sds', 'mdm', 'test'] satisfies PeerRole[];

export interface PeerIdentity {
  role: PeerRole;
  name: string;
}

export interface HandshakeOptions {
  clusterId: string;
  /** The shared cluster secret; never sent. */
  secret: Buffer;
  role: PeerRole;
  name: string;
  log: Logger;
}

/** How setup reaches the other side. */
export interface HandshakeLink {
  /** Sends one setup frame at once (uncorked: a refusal is followed by the connection's end). */
  send(op: number, reply: boolean, status: number, payload: Buffer): void;
  /** The next frame received, whatever it is; rejects if the connection fails first. */
  next(): Promise<{ header: WireHeader; payload: Buffer }>;
  /** Where the other side is, for logs. */
  remoteAddress: string | undefined;
}

/** Runs setup as `side`; resolves with who the other side proved to be, or throws WireError. */
export async function handshake(side: 'connector' | 'acceptor', link: HandshakeLink, options: HandshakeOptions): Promise<PeerIdentity> {
  const ownNonce = randomBytes(nonceBytes);
  if (side === 'connector') {
    link.send(WireOp.Hello, false, WireStatus.Ok, helloPayload(ownNonce, options, null));
    const reply = await expectFrame(link, WireOp.Hello);
    const { nonce: remoteNonce, identity, proof } = parseHello(reply, true);
    checkProof(link, options, proof, proofOf(options, 'acceptor', ownNonce, remoteNonce), identity);
    link.send(WireOp.Proof, false, WireStatus.Ok, proofOf(options, 'connector', remoteNonce, ownNonce));
    await expectFrame(link, WireOp.Ready);
    return identity;
  }
  const request = await expectFrame(link, WireOp.Hello);
  const { nonce: remoteNonce, identity } = parseHello(request, false);
  link.send(WireOp.Hello, true, WireStatus.Ok, helloPayload(ownNonce, options, proofOf(options, 'acceptor', remoteNonce, ownNonce)));
  const proof = await expectFrame(link, WireOp.Proof);
  checkProof(link, options, proof, proofOf(options, 'connector', ownNonce, remoteNonce), identity);
  link.send(WireOp.Ready, true, WireStatus.Ok, Buffer.alloc(0));
  return identity;
}

/** The next frame's payload; it must be `op`, and a refusal ends setup. */
async function expectFrame(link: HandshakeLink, op: number): Promise<Buffer> {
  const { header, payload } = await link.next();
  if (header.status === WireStatus.AuthFailed) throw new WireError('MB_ERR_WIRE_AUTH', `the peer refused us: ${payload.toString()}`);
  if (header.op !== op) throw new WireError('MB_ERR_WIRE_SETUP', `expected setup op ${op}, got ${header.op}`);
  return payload;
}

/** The proof of `side`: `first` is the nonce of the side that checks it, `second` the other. */
function proofOf(options: HandshakeOptions, side: 'connector' | 'acceptor', first: Buffer, second: Buffer): Buffer {
  return createHmac('sha256', options.secret).update(`meshblock-wire/${side}/${options.clusterId}/`).update(first).update(second).digest();
}

function checkProof(link: HandshakeLink, options: HandshakeOptions, proof: Buffer, expected: Buffer, identity: PeerIdentity): void {
  if (proof.length === expected.length && timingSafeEqual(proof, expected)) return;
  options.log.warn({ remote: identity, peer: link.remoteAddress }, 'wire peer failed the cluster secret challenge');
  link.send(WireOp.Ready, true, WireStatus.AuthFailed, Buffer.from('cluster secret challenge failed'));
  throw new WireError('MB_ERR_WIRE_AUTH', `peer ${identity.role} '${identity.name}' does not know the cluster secret`);
}

function helloPayload(nonce: Buffer, options: HandshakeOptions, proof: Buffer | null): Buffer {
  const identity = Buffer.from(JSON.stringify({ role: options.role, name: options.name }));
  const proofBytes = proof ?? Buffer.alloc(0);
  const length = Buffer.alloc(2);
  length.writeUInt16BE(proofBytes.length, 0);
  return Buffer.concat([nonce, length, proofBytes, identity]);
}

function parseHello(payload: Buffer, withProof: boolean): { nonce: Buffer; identity: PeerIdentity; proof: Buffer } {
  if (payload.length < nonceBytes + 2) throw new WireError('MB_ERR_WIRE_SETUP', 'HELLO too short');
  const nonce = payload.subarray(0, nonceBytes);
  const proofBytes = payload.readUInt16BE(nonceBytes);
  if (withProof !== proofBytes > 0 || nonceBytes + 2 + proofBytes > payload.length) {
    throw new WireError('MB_ERR_WIRE_SETUP', 'HELLO proof is missing or malformed');
  }
  const proof = payload.subarray(nonceBytes + 2, nonceBytes + 2 + proofBytes);
  let identity: unknown;
  try {
    identity = JSON.parse(payload.subarray(nonceBytes + 2 + proofBytes).toString('utf8'));
  } catch {
    throw new WireError('MB_ERR_WIRE_SETUP', 'HELLO identity is not JSON');
  }
  if (
    typeof identity !== 'object' ||
    identity === null ||
    !('role' in identity) ||
    !('name' in identity) ||
    typeof identity.name !== 'string' ||
    !peerRoles.includes(String(identity.role))
  ) {
    throw new WireError('MB_ERR_WIRE_SETUP', 'HELLO identity lacks a role or name');
  }
  return { nonce, identity: { role: identity.role as PeerRole, name: identity.name }, proof };
}
