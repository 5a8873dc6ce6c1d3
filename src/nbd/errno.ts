import * as P from './protocol.js';

// The one place where a failure becomes an NBD error value (after nbdkit's nbd_errno()).
// The spec allows only a few values; everything unknown is EIO.
const byCode: Record<string, number> = {
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
};

export function nbdErrnoOf(err: unknown): number {
  if (typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string') {
    return byCode[err.code] ?? P.NBD_EIO;
  }
  return P.NBD_EIO;
}
