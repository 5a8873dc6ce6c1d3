/*
 * The few Linux calls that Node's fs module does not offer and a block store needs:
 * fallocate (punch holes for TRIM, zero ranges for WRITE_ZEROES), lseek with
 * SEEK_DATA/SEEK_HOLE (allocation status for BLOCK_STATUS), and the block-device ioctls
 * BLKGETSIZE64, BLKDISCARD and BLKZEROOUT. Each slow call runs on libuv's thread pool
 * (napi_async_work), like Node's own fs calls, and answers callback(errno, result).
 *
 * preadNowait is the exception, and the point: preadv2 with RWF_NOWAIT copies from the
 * page cache on the calling thread, and fails with EAGAIN instead of waiting for a disk.
 * Small reads whose pages are cached then cost one system call on the event loop instead
 * of a round trip through the thread pool (two context switches and two wake-ups), which
 * is most of their latency. Anything that would block still goes to the pool. Writes have
 * no such twin (ext4 refuses buffered pwritev2 with RWF_NOWAIT, EOPNOTSUPP), so
 * pwriteInline writes on the calling thread and reports afterwards whether it blocked.
 */
#define _GNU_SOURCE
#define NAPI_VERSION 8
#include <node_api.h>

#include <errno.h>
#include <malloc.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/uio.h>
#include <unistd.h>

enum op_kind { OP_FALLOCATE, OP_LSEEK, OP_DISCARD, OP_ZEROOUT };

struct op {
  enum op_kind kind;
  int fd;
  int mode;       /* fallocate mode, or lseek whence */
  int64_t offset;
  int64_t length;
  int64_t result;
  int error;      /* errno, 0 on success */
  napi_ref callback;
  napi_async_work work;
};

static void execute(napi_env env, void *data) {
  struct op *op = data;
  (void)env;
  op->error = 0;
  op->result = 0;
  switch (op->kind) {
  case OP_FALLOCATE:
    if (fallocate(op->fd, op->mode, op->offset, op->length) != 0) op->error = errno;
    break;
  case OP_LSEEK: {
    off_t r = lseek(op->fd, op->offset, op->mode);
    if (r < 0) op->error = errno;
    else op->result = r;
    break;
  }
  case OP_DISCARD:
  case OP_ZEROOUT: {
    uint64_t range[2] = { (uint64_t)op->offset, (uint64_t)op->length };
    if (ioctl(op->fd, op->kind == OP_DISCARD ? BLKDISCARD : BLKZEROOUT, range) != 0) op->error = errno;
    break;
  }
  }
}

static void complete(napi_env env, napi_status status, void *data) {
  struct op *op = data;
  napi_value callback, global, argv[2];
  napi_get_reference_value(env, op->callback, &callback);
  napi_get_global(env, &global);
  napi_create_int32(env, status == napi_ok ? op->error : ECANCELED, &argv[0]);
  napi_create_int64(env, op->result, &argv[1]);
  napi_delete_reference(env, op->callback);
  napi_delete_async_work(env, op->work);
  free(op);
  napi_call_function(env, global, callback, 2, argv, NULL);
}

/* Arguments: (fd, mode, offset, length, callback); unused ones are passed as 0. */
static napi_value start(napi_env env, napi_callback_info info, enum op_kind kind) {
  size_t argc = 5;
  napi_value argv[5], name;
  int32_t fd, mode;
  int64_t offset, length;
  napi_valuetype type;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc != 5 || napi_get_value_int32(env, argv[0], &fd) != napi_ok ||
      napi_get_value_int32(env, argv[1], &mode) != napi_ok ||
      napi_get_value_int64(env, argv[2], &offset) != napi_ok ||
      napi_get_value_int64(env, argv[3], &length) != napi_ok ||
      napi_typeof(env, argv[4], &type) != napi_ok || type != napi_function) {
    napi_throw_type_error(env, NULL, "expected (fd, mode, offset, length, callback)");
    return NULL;
  }
  struct op *op = calloc(1, sizeof *op);
  if (op == NULL) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  op->kind = kind;
  op->fd = fd;
  op->mode = mode;
  op->offset = offset;
  op->length = length;
  napi_create_reference(env, argv[4], 1, &op->callback);
  napi_create_string_utf8(env, "meshblock:native", NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(env, NULL, name, execute, complete, op, &op->work);
  napi_queue_async_work(env, op->work);
  return NULL;
}

static napi_value js_fallocate(napi_env env, napi_callback_info info) { return start(env, info, OP_FALLOCATE); }
static napi_value js_lseek(napi_env env, napi_callback_info info) { return start(env, info, OP_LSEEK); }
static napi_value js_discard(napi_env env, napi_callback_info info) { return start(env, info, OP_DISCARD); }
static napi_value js_zeroout(napi_env env, napi_callback_info info) { return start(env, info, OP_ZEROOUT); }

/* blockDeviceSize(fd) -> bytes; throws with .errno on failure. Fast: no thread needed. */
static napi_value js_block_device_size(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], result;
  int32_t fd;
  uint64_t bytes = 0;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc != 1 || napi_get_value_int32(env, argv[0], &fd) != napi_ok) {
    napi_throw_type_error(env, NULL, "expected (fd)");
    return NULL;
  }
  if (ioctl(fd, BLKGETSIZE64, &bytes) != 0) {
    napi_value error, message, code;
    napi_create_string_utf8(env, "BLKGETSIZE64 failed", NAPI_AUTO_LENGTH, &message);
    napi_create_error(env, NULL, message, &error);
    napi_create_int32(env, errno, &code);
    napi_set_named_property(env, error, "errno", code);
    napi_throw(env, error);
    return NULL;
  }
  napi_create_double(env, (double)bytes, &result);
  return result;
}

/* The (fd, buffer, offset) arguments of the inline calls. */
struct fd_io {
  int32_t fd;
  void *data;
  size_t length;
  int64_t offset;
};

/* Reads the arguments into `io`; false (and a TypeError thrown) if they are not (fd, buffer, offset). */
static int fd_buffer_offset(napi_env env, napi_callback_info info, struct fd_io *io) {
  size_t argc = 3;
  napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc != 3 || napi_get_value_int32(env, argv[0], &io->fd) != napi_ok ||
      napi_get_buffer_info(env, argv[1], &io->data, &io->length) != napi_ok ||
      napi_get_value_int64(env, argv[2], &io->offset) != napi_ok) {
    napi_throw_type_error(env, NULL, "expected (fd, buffer, offset)");
    return 0;
  }
  return 1;
}

/*
 * preadNowait(fd, buffer, offset) -> bytes read (may be short, 0 at end of file) or -errno
 * (EAGAIN: would block; EOPNOTSUPP: the file or kernel has no RWF_NOWAIT reads). Never
 * throws for I/O errors: this is the hot path and the caller falls back to the thread pool
 * on any negative answer.
 */
static napi_value js_pread_nowait(napi_env env, napi_callback_info info) {
  napi_value result;
  struct fd_io io;
  if (!fd_buffer_offset(env, info, &io)) return NULL;
  struct iovec iov = { .iov_base = io.data, .iov_len = io.length };
  ssize_t done = preadv2(io.fd, &iov, 1, io.offset, RWF_NOWAIT);
  napi_create_int64(env, done < 0 ? -(int64_t)errno : (int64_t)done, &result);
  return result;
}


/*
 * pwriteInline(fd, buffer, offset) -> bytes written, or -errno: a buffered write on the
 * calling thread, which for a file is a copy into the page cache. The caller then asks
 * inlineWriteSlept() whether that write blocked: a voluntary context switch of this thread
 * during the call (dirty-page throttling, a journal wait, a page lock) means the event
 * loop stood still for the disk, and small writes should go back to the thread pool for a
 * while. Being preempted by another process is an involuntary switch and says nothing
 * about the disk; on a machine with more busy processes than cores it happens all the
 * time, and timing the call alone cannot tell the two apart.
 */
static int inline_write_slept = 0;

static napi_value js_pwrite_inline(napi_env env, napi_callback_info info) {
  napi_value result;
  struct fd_io io;
  if (!fd_buffer_offset(env, info, &io)) return NULL;
  struct rusage before, after;
  getrusage(RUSAGE_THREAD, &before);
  ssize_t done = pwrite(io.fd, io.data, io.length, io.offset);
  int saved = errno;
  getrusage(RUSAGE_THREAD, &after);
  inline_write_slept = after.ru_nvcsw != before.ru_nvcsw;
  napi_create_int64(env, done < 0 ? -(int64_t)saved : (int64_t)done, &result);
  return result;
}

static napi_value js_inline_write_slept(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value result;
  napi_get_boolean(env, inline_write_slept, &result);
  return result;
}


/*
 * tuneMalloc(mmapThresholdBytes, trimThresholdBytes) -> true if glibc took both. Node
 * allocates every socket read (64 KiB) and most Buffers with malloc. glibc serves blocks
 * from 128 KiB up with a fresh mmap, and gives the top of its heap back to the kernel when
 * over 128 KiB of it is free; both thresholds only creep up on their own. A daemon moving
 * 1 MiB blocks then pays a page fault for every 4 KiB it receives, and the unmap after:
 * with the thresholds set once at start, freed blocks stay mapped and are reused.
 */
static napi_value js_tune_malloc(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], result;
  int64_t mmap_threshold, trim_threshold;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc != 2 || napi_get_value_int64(env, argv[0], &mmap_threshold) != napi_ok ||
      napi_get_value_int64(env, argv[1], &trim_threshold) != napi_ok) {
    napi_throw_type_error(env, NULL, "expected (mmapThresholdBytes, trimThresholdBytes)");
    return NULL;
  }
  int ok = 0;
#if defined(__GLIBC__)
  ok = mallopt(M_MMAP_THRESHOLD, (int)mmap_threshold) == 1 && mallopt(M_TRIM_THRESHOLD, (int)trim_threshold) == 1;
#endif
  napi_get_boolean(env, ok, &result);
  return result;
}


/*
 * adviseRandom(fd) -> 0, or an errno: posix_fadvise(POSIX_FADV_RANDOM) over the whole
 * file, which turns readahead off for this open file. An SDS reads whole chunk ranges that
 * the SDC asked for, so readahead only adds reads nobody wants; worse, on recent kernels
 * readahead fills the page cache with large folios, and a 4 KiB buffered write into one
 * costs about ten times a write into a small one (measured in docs/benchmarks.md).
 */
static napi_value js_advise_random(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], result;
  int32_t fd;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc != 1 || napi_get_value_int32(env, argv[0], &fd) != napi_ok) {
    napi_throw_type_error(env, NULL, "expected (fd)");
    return NULL;
  }
  napi_create_int32(env, posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM), &result);
  return result;
}


/*
 * CRC-32C (Castagnoli) for payload checksums at line rate: the SSE4.2 crc32 instruction,
 * 8 bytes a step, where the CPU has it (checked at run time); a table otherwise. The
 * result is the same as src/common/crc32c.ts, which test/common/crc32c.test.ts checks.
 */
static uint32_t crc32c_table[256];

static void crc32c_init(void) {
  for (uint32_t index = 0; index < 256; index++) {
    uint32_t value = index;
    for (int bit = 0; bit < 8; bit++) value = value & 1 ? (value >> 1) ^ 0x82f63b78u : value >> 1;
    crc32c_table[index] = value;
  }
}

static uint32_t crc32c_soft(uint32_t crc, const uint8_t *bytes, size_t length) {
  for (size_t index = 0; index < length; index++) crc = crc32c_table[(crc ^ bytes[index]) & 0xff] ^ (crc >> 8);
  return crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t crc32c_sse42(uint32_t crc, const uint8_t *bytes, size_t length) {
  uint64_t crc64 = crc;
  while (length >= 8) {
    uint64_t word;
    memcpy(&word, bytes, 8);
    crc64 = __builtin_ia32_crc32di(crc64, word);
    bytes += 8;
    length -= 8;
  }
  crc = (uint32_t)crc64;
  while (length > 0) {
    crc = __builtin_ia32_crc32qi(crc, *bytes++);
    length--;
  }
  return crc;
}
#endif

static uint32_t (*crc32c_impl)(uint32_t, const uint8_t *, size_t) = crc32c_soft;

/* crc32c(buffer, previous) -> CRC-32C of buffer continuing from previous (0 to start). */
static napi_value js_crc32c(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], result;
  void *data;
  size_t length;
  uint32_t previous;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc != 2 || napi_get_buffer_info(env, argv[0], &data, &length) != napi_ok ||
      napi_get_value_uint32(env, argv[1], &previous) != napi_ok) {
    napi_throw_type_error(env, NULL, "expected (buffer, previous)");
    return NULL;
  }
  uint32_t crc = ~crc32c_impl(~previous, data, length);
  napi_create_uint32(env, crc, &result);
  return result;
}

/*
 * crc32cBlocks(buffer, blockBytes, seed, out) -> blocks: the CRC-32C of each blockBytes-long
 * block of buffer, each continuing from seed, into the Uint32Array out. One call for a whole
 * IO's blocks: the per-call cost of N-API, paid per 4 KiB block, doubled the cost of
 * checksumming a 1 MiB read.
 */
static napi_value js_crc32c_blocks(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4], result;
  void *data, *out_data;
  size_t length, out_length, out_offset;
  uint32_t block_bytes, seed;
  napi_typedarray_type out_type;
  napi_value out_buffer;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc != 4 || napi_get_buffer_info(env, argv[0], &data, &length) != napi_ok ||
      napi_get_value_uint32(env, argv[1], &block_bytes) != napi_ok || napi_get_value_uint32(env, argv[2], &seed) != napi_ok ||
      napi_get_typedarray_info(env, argv[3], &out_type, &out_length, &out_data, &out_buffer, &out_offset) != napi_ok ||
      out_type != napi_uint32_array) {
    napi_throw_type_error(env, NULL, "expected (buffer, blockBytes, seed, Uint32Array)");
    return NULL;
  }
  if (block_bytes == 0 || length % block_bytes != 0 || length / block_bytes > out_length) {
    napi_throw_range_error(env, NULL, "buffer is not whole blocks, or out is too short");
    return NULL;
  }
  size_t blocks = length / block_bytes;
  uint32_t *crcs = out_data;
  for (size_t index = 0; index < blocks; index++) crcs[index] = ~crc32c_impl(~seed, (const uint8_t *)data + index * block_bytes, block_bytes);
  napi_create_uint32(env, (uint32_t)blocks, &result);
  return result;
}

/*
 * bufferAddressModulo(buffer, modulus) -> the buffer's address modulo `modulus` (a power of
 * two): what O_DIRECT's memory alignment is checked against. JavaScript cannot see an
 * address; an aligned view is then a subarray at (modulus - this) % modulus.
 */
static napi_value js_buffer_address_modulo(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], result;
  void *data;
  size_t length;
  uint32_t modulus;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc != 2 || napi_get_buffer_info(env, argv[0], &data, &length) != napi_ok ||
      napi_get_value_uint32(env, argv[1], &modulus) != napi_ok || modulus == 0 || (modulus & (modulus - 1)) != 0) {
    napi_throw_type_error(env, NULL, "expected (buffer, power of two)");
    return NULL;
  }
  napi_create_uint32(env, (uint32_t)((uintptr_t)data & (modulus - 1)), &result);
  return result;
}

/* logicalBlockSize(fd) -> a block device's logical sector size (BLKSSZGET), or -errno. */
static napi_value js_logical_block_size(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], result;
  int32_t fd;
  int bytes = 0;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc != 1 || napi_get_value_int32(env, argv[0], &fd) != napi_ok) {
    napi_throw_type_error(env, NULL, "expected (fd)");
    return NULL;
  }
  napi_create_int32(env, ioctl(fd, BLKSSZGET, &bytes) == 0 ? bytes : -errno, &result);
  return result;
}

/* meshblock_aio.c */
void register_aio(napi_env env, napi_value exports);

static void set_int(napi_env env, napi_value target, const char *name, int value) {
  napi_value v;
  napi_create_int32(env, value, &v);
  napi_set_named_property(env, target, name, v);
}

static void set_fn(napi_env env, napi_value target, const char *name, napi_callback fn) {
  napi_value v;
  napi_create_function(env, name, NAPI_AUTO_LENGTH, fn, NULL, &v);
  napi_set_named_property(env, target, name, v);
}

NAPI_MODULE_INIT() {
  crc32c_init();
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("sse4.2")) crc32c_impl = crc32c_sse42;
#endif
  set_fn(env, exports, "crc32c", js_crc32c);
  set_fn(env, exports, "crc32cBlocks", js_crc32c_blocks);
  set_fn(env, exports, "fallocate", js_fallocate);
  set_fn(env, exports, "lseek", js_lseek);
  set_fn(env, exports, "discard", js_discard);
  set_fn(env, exports, "zeroout", js_zeroout);
  set_fn(env, exports, "blockDeviceSize", js_block_device_size);
  set_fn(env, exports, "preadNowait", js_pread_nowait);
  set_fn(env, exports, "pwriteInline", js_pwrite_inline);
  set_fn(env, exports, "inlineWriteSlept", js_inline_write_slept);
  set_fn(env, exports, "tuneMalloc", js_tune_malloc);
  set_fn(env, exports, "adviseRandom", js_advise_random);
  set_fn(env, exports, "bufferAddressModulo", js_buffer_address_modulo);
  set_fn(env, exports, "logicalBlockSize", js_logical_block_size);
  register_aio(env, exports);
  set_int(env, exports, "EOPNOTSUPP", EOPNOTSUPP);
  set_int(env, exports, "FALLOC_FL_KEEP_SIZE", FALLOC_FL_KEEP_SIZE);
  set_int(env, exports, "FALLOC_FL_PUNCH_HOLE", FALLOC_FL_PUNCH_HOLE);
  set_int(env, exports, "FALLOC_FL_ZERO_RANGE", FALLOC_FL_ZERO_RANGE);
  set_int(env, exports, "SEEK_DATA", SEEK_DATA);
  set_int(env, exports, "SEEK_HOLE", SEEK_HOLE);
  return exports;
}
