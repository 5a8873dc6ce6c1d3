import type { ErrnoCode } from '../common/errors.js';
import * as P from './protocol.js';

// The one place where a failure becomes an NBD error value (after nbdkit's nbd_errno()).
// The spec allows only a few values; everything unknown is EIO, MB_ERR_* codes included.
// Looked up by any string: Node's own fs and socket errors carry errno names too.
const byCode: Readonly<Record<string, number>> = {
  EPERM: P.NBD_EPERM,
  EACCES: P.NBD_EPERM,
  EROFS: P.NBD_EPERM,
  EIO: P.NBD_EIO,
  ENOMEM: P.NBD_ENOMEM,
  EINVAL: P.NBD_EINVAL,
  ENOSPC: P.NBD_ENOSPC,
  EDQUOT: P.NBD_ENOSPC,
  EFBIG: P.NBD_ENOSPC,
  EOVERFLOW: P.NBD_EOVERFLOW,
  ENOTSUP: P.NBD_ENOTSUP,
  EOPNOTSUPP: P.NBD_ENOTSUP,
  ESHUTDOWN: P.NBD_ESHUTDOWN,
} satisfies Partial<Record<ErrnoCode, number>>;

export function nbdErrnoOf(err: unknown): number {
  if (typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string') {
    return byCode[err.code] ?? P.NBD_EIO;
  }
  return P.NBD_EIO;
}
