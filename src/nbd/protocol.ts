// NBD wire constants, as in the NBD protocol specification (doc/proto.md of
// NetworkBlockDevice/nbd). Everything is big-endian on the wire.
//
// Handshake (fixed newstyle), server speaks first:
//
//   S: 'NBDMAGIC' (u64) | 'IHAVEOPT' (u64) | handshake flags (u16)
//   C: client flags (u32)
//   then, repeated:
//   C: 'IHAVEOPT' (u64) | option (u32) | length (u32) | data[length]
//   S: REPLY_MAGIC (u64) | option (u32) | reply type (u32) | length (u32) | data[length]
//
// Transmission:
//
//   request (28 bytes)              simple reply (16 bytes)        structured chunk (20 bytes)
//   +0  magic 0x25609513 (u32)      +0  magic 0x67446698 (u32)     +0  magic 0x668e33ef (u32)
//   +4  command flags (u16)         +4  error (u32)                +4  flags (u16)
//   +6  type (u16)                  +8  cookie (u64)               +6  type (u16)
//   +8  cookie (u64)                +16 data (READ only)           +8  cookie (u64)
//   +16 offset (u64)                                               +16 payload length (u32)
//   +24 length (u32)                                               +20 payload
//   +28 data (WRITE only)

export const NBD_MAGIC = 0x4e42444d41474943n; // 'NBDMAGIC'
export const NBD_IHAVEOPT = 0x49484156454f5054n; // 'IHAVEOPT'
export const NBD_REP_MAGIC = 0x3e889045565a9n;
export const NBD_REQUEST_MAGIC = 0x25609513;
export const NBD_SIMPLE_REPLY_MAGIC = 0x67446698;
export const NBD_STRUCTURED_REPLY_MAGIC = 0x668e33ef;

export const REQUEST_HEADER_BYTES = 28;
export const SIMPLE_REPLY_HEADER_BYTES = 16;
export const STRUCTURED_REPLY_HEADER_BYTES = 20;
export const OPTION_HEADER_BYTES = 16;
export const OPTION_REPLY_HEADER_BYTES = 20;

// Handshake flags (server) and client flags.
export const NBD_FLAG_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_NO_ZEROES = 1 << 1;
export const NBD_FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_C_NO_ZEROES = 1 << 1;
export const CLIENT_FLAGS_KNOWN = NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES;

// Transmission flags.
export const NBD_FLAG_HAS_FLAGS = 1 << 0;
export const NBD_FLAG_READ_ONLY = 1 << 1;
export const NBD_FLAG_SEND_FLUSH = 1 << 2;
export const NBD_FLAG_SEND_FUA = 1 << 3;
export const NBD_FLAG_ROTATIONAL = 1 << 4;
export const NBD_FLAG_SEND_TRIM = 1 << 5;
export const NBD_FLAG_SEND_WRITE_ZEROES = 1 << 6;
export const NBD_FLAG_SEND_DF = 1 << 7;
export const NBD_FLAG_CAN_MULTI_CONN = 1 << 8;
export const NBD_FLAG_SEND_CACHE = 1 << 10;
export const NBD_FLAG_SEND_FAST_ZERO = 1 << 11;

// Options.
export const NBD_OPT_EXPORT_NAME = 1;
export const NBD_OPT_ABORT = 2;
export const NBD_OPT_LIST = 3;
export const NBD_OPT_STARTTLS = 5;
export const NBD_OPT_INFO = 6;
export const NBD_OPT_GO = 7;
export const NBD_OPT_STRUCTURED_REPLY = 8;
export const NBD_OPT_LIST_META_CONTEXT = 9;
export const NBD_OPT_SET_META_CONTEXT = 10;

// Option reply types; errors have bit 31 set.
export const NBD_REP_ACK = 1;
export const NBD_REP_SERVER = 2;
export const NBD_REP_INFO = 3;
export const NBD_REP_META_CONTEXT = 4;
const NBD_REP_FLAG_ERROR = 0x80000000;
export const NBD_REP_ERR_UNSUP = (NBD_REP_FLAG_ERROR | 1) >>> 0;
export const NBD_REP_ERR_POLICY = (NBD_REP_FLAG_ERROR | 2) >>> 0;
export const NBD_REP_ERR_INVALID = (NBD_REP_FLAG_ERROR | 3) >>> 0;
export const NBD_REP_ERR_PLATFORM = (NBD_REP_FLAG_ERROR | 4) >>> 0;
export const NBD_REP_ERR_TLS_REQD = (NBD_REP_FLAG_ERROR | 5) >>> 0;
export const NBD_REP_ERR_UNKNOWN = (NBD_REP_FLAG_ERROR | 6) >>> 0;
export const NBD_REP_ERR_SHUTDOWN = (NBD_REP_FLAG_ERROR | 7) >>> 0;
export const NBD_REP_ERR_BLOCK_SIZE_REQD = (NBD_REP_FLAG_ERROR | 8) >>> 0;
export const NBD_REP_ERR_TOO_BIG = (NBD_REP_FLAG_ERROR | 9) >>> 0;

// NBD_REP_INFO item types.
export const NBD_INFO_EXPORT = 0;
export const NBD_INFO_NAME = 1;
export const NBD_INFO_DESCRIPTION = 2;
export const NBD_INFO_BLOCK_SIZE = 3;

// Commands.
export const NBD_CMD_READ = 0;
export const NBD_CMD_WRITE = 1;
export const NBD_CMD_DISC = 2;
export const NBD_CMD_FLUSH = 3;
export const NBD_CMD_TRIM = 4;
export const NBD_CMD_CACHE = 5;
export const NBD_CMD_WRITE_ZEROES = 6;
export const NBD_CMD_BLOCK_STATUS = 7;

// Command flags.
export const NBD_CMD_FLAG_FUA = 1 << 0;
export const NBD_CMD_FLAG_NO_HOLE = 1 << 1;
export const NBD_CMD_FLAG_DF = 1 << 2;
export const NBD_CMD_FLAG_REQ_ONE = 1 << 3;
export const NBD_CMD_FLAG_FAST_ZERO = 1 << 4;
export const CMD_FLAGS_KNOWN =
  NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_DF | NBD_CMD_FLAG_REQ_ONE | NBD_CMD_FLAG_FAST_ZERO;

// Structured reply flags and types.
export const NBD_REPLY_FLAG_DONE = 1 << 0;
export const NBD_REPLY_TYPE_NONE = 0;
export const NBD_REPLY_TYPE_OFFSET_DATA = 1;
export const NBD_REPLY_TYPE_OFFSET_HOLE = 2;
export const NBD_REPLY_TYPE_BLOCK_STATUS = 5;
export const NBD_REPLY_TYPE_ERROR = (1 << 15) + 1;
export const NBD_REPLY_TYPE_ERROR_OFFSET = (1 << 15) + 2;

// Error values: the spec restricts the error field to these.
export const NBD_EPERM = 1;
export const NBD_EIO = 5;
export const NBD_ENOMEM = 12;
export const NBD_EINVAL = 22;
export const NBD_ENOSPC = 28;
export const NBD_EOVERFLOW = 75;
export const NBD_ENOTSUP = 95;
export const NBD_ESHUTDOWN = 108;

// base:allocation status flags.
export const NBD_STATE_HOLE = 1 << 0;
export const NBD_STATE_ZERO = 1 << 1;

export const META_CONTEXT_BASE_ALLOCATION = 'base:allocation';
/** The id we give base:allocation when selected (any nonzero-or-zero u32 unique per connection). */
export const META_CONTEXT_BASE_ALLOCATION_ID = 1;

const commandNames: Record<number, string> = {
  [NBD_CMD_READ]: 'READ',
  [NBD_CMD_WRITE]: 'WRITE',
  [NBD_CMD_DISC]: 'DISC',
  [NBD_CMD_FLUSH]: 'FLUSH',
  [NBD_CMD_TRIM]: 'TRIM',
  [NBD_CMD_CACHE]: 'CACHE',
  [NBD_CMD_WRITE_ZEROES]: 'WRITE_ZEROES',
  [NBD_CMD_BLOCK_STATUS]: 'BLOCK_STATUS',
};

export function commandName(type: number): string {
  return commandNames[type] ?? `UNKNOWN(${type})`;
}

const optionNames: Record<number, string> = {
  [NBD_OPT_EXPORT_NAME]: 'EXPORT_NAME',
  [NBD_OPT_ABORT]: 'ABORT',
  [NBD_OPT_LIST]: 'LIST',
  [NBD_OPT_STARTTLS]: 'STARTTLS',
  [NBD_OPT_INFO]: 'INFO',
  [NBD_OPT_GO]: 'GO',
  [NBD_OPT_STRUCTURED_REPLY]: 'STRUCTURED_REPLY',
  [NBD_OPT_LIST_META_CONTEXT]: 'LIST_META_CONTEXT',
  [NBD_OPT_SET_META_CONTEXT]: 'SET_META_CONTEXT',
};

export function optionName(option: number): string {
  return optionNames[option] ?? `UNKNOWN(${option})`;
}
