// A failure inside an SDS request handler that becomes a specific wire status (StaleEpoch,
// MirrorFailed, IoError...) instead of the catch-all `Failed`, with the payload that status
// carries (StaleEpoch carries the SDS's own epoch, so the sender knows what to fetch).

import { MeshblockError } from '../common/errors.js';

export class ReplyError extends MeshblockError {
  constructor(
    readonly status: number,
    message: string,
    readonly payload: Buffer = Buffer.from(message),
  ) {
    super('MB_ERR_SDS_REPLY', message);
  }
}
