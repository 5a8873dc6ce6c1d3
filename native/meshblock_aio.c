/*
 * Linux native AIO (io_submit) for direct device IO, completed on the event loop: an
 * eventfd per ring is polled by libuv, and each completion calls its JavaScript callback
 * there. A direct read or write then costs one io_submit on the event loop and a share of
 * one wake-up, instead of a thread-pool round trip (a wake-up and two context switches per
 * IO). This is what ScaleIO's SDS and Ceph's BlueStore use, and it works on every kernel
 * meshblock runs on (3.10 and later), where io_uring does not.
 *
 * Each IO is submitted with RWF_NOWAIT where the kernel knows it (4.13 and later): an IO
 * that would block inside io_submit (a filesystem allocating blocks, a full device queue)
 * fails with EAGAIN instead, and the caller runs that one on the thread pool. Without
 * RWF_NOWAIT (older kernels refuse the flag with EINVAL), io_submit is used as it is.
 *
 * JavaScript holds a ring as an external value. aioSubmit keeps the buffer and the callback
 * referenced until the completion; aioClose is refused while IO is in flight.
 */
#define _GNU_SOURCE
#define NAPI_VERSION 8
#include <node_api.h>
#include <uv.h>

#include <errno.h>
#include <linux/aio_abi.h>
#include <linux/fs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef RWF_NOWAIT
#define RWF_NOWAIT 0x00000008
#endif

struct aio_ring {
  aio_context_t context;
  int eventfd;
  uv_poll_t poll;
  napi_env env;
  napi_async_context async_context;
  uint32_t inflight;
  uint32_t depth;
  int nowait; /* RWF_NOWAIT is accepted */
  int closed;
};

struct aio_request {
  struct iocb iocb;
  napi_ref callback;
  napi_ref buffer;
};

static long sys_io_setup(unsigned events, aio_context_t *context) { return syscall(__NR_io_setup, events, context); }
static long sys_io_destroy(aio_context_t context) { return syscall(__NR_io_destroy, context); }
static long sys_io_submit(aio_context_t context, long count, struct iocb **iocbs) { return syscall(__NR_io_submit, context, count, iocbs); }
static long sys_io_getevents(aio_context_t context, long min, long max, struct io_event *events, struct timespec *timeout) {
  return syscall(__NR_io_getevents, context, min, max, events, timeout);
}

static void throw_errno(napi_env env, const char *what, int error) {
  napi_value message, code, exception;
  char text[160];
  snprintf(text, sizeof text, "%s failed: %s", what, strerror(error));
  napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &message);
  napi_create_error(env, NULL, message, &exception);
  napi_create_int32(env, error, &code);
  napi_set_named_property(env, exception, "errno", code);
  napi_throw(env, exception);
}

/* Delivers every completed event to its callback, in the order the kernel gives them. */
static void on_readable(uv_poll_t *poll, int status, int events) {
  struct aio_ring *ring = poll->data;
  napi_env env = ring->env;
  uint64_t count;
  struct io_event done[64];
  struct timespec zero = { 0, 0 };
  (void)status;
  (void)events;
  if (read(ring->eventfd, &count, sizeof count) < 0 && errno != EAGAIN) return;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value global;
  napi_get_global(env, &global);
  for (;;) {
    long got = sys_io_getevents(ring->context, 0, 64, done, &zero);
    if (got <= 0) break;
    for (long index = 0; index < got; index++) {
      struct aio_request *request = (struct aio_request *)(uintptr_t)done[index].data;
      napi_value callback, result;
      napi_get_reference_value(env, request->callback, &callback);
      napi_delete_reference(env, request->callback);
      napi_delete_reference(env, request->buffer);
      napi_create_int64(env, (int64_t)done[index].res, &result);
      free(request);
      ring->inflight -= 1;
      if (ring->inflight == 0) uv_unref((uv_handle_t *)&ring->poll);
      if (napi_make_callback(env, ring->async_context, global, callback, 1, &result, NULL) == napi_pending_exception) {
        napi_value exception;
        napi_get_and_clear_last_exception(env, &exception);
        napi_fatal_exception(env, exception);
      }
    }
    if (got < 64) break;
  }
  napi_close_handle_scope(env, scope);
}

/* aioOpen(depth) -> ring: an AIO context of `depth` events and its eventfd on the loop. Throws with .errno. */
static napi_value js_aio_open(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], result, name;
  uint32_t depth;
  uv_loop_t *loop;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc != 1 || napi_get_value_uint32(env, argv[0], &depth) != napi_ok || depth == 0) {
    napi_throw_type_error(env, NULL, "expected (depth)");
    return NULL;
  }
  struct aio_ring *ring = calloc(1, sizeof *ring);
  if (ring == NULL) {
    throw_errno(env, "aioOpen", ENOMEM);
    return NULL;
  }
  if (sys_io_setup(depth, &ring->context) != 0) {
    int error = errno;
    free(ring);
    throw_errno(env, "io_setup", error);
    return NULL;
  }
  ring->eventfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (ring->eventfd < 0) {
    int error = errno;
    sys_io_destroy(ring->context);
    free(ring);
    throw_errno(env, "eventfd", error);
    return NULL;
  }
  ring->env = env;
  ring->depth = depth;
  ring->nowait = 1;
  napi_get_uv_event_loop(env, &loop);
  uv_poll_init(loop, &ring->poll, ring->eventfd);
  ring->poll.data = ring;
  uv_poll_start(&ring->poll, UV_READABLE, on_readable);
  uv_unref((uv_handle_t *)&ring->poll);
  napi_create_string_utf8(env, "meshblock:aio", NAPI_AUTO_LENGTH, &name);
  napi_async_init(env, NULL, name, &ring->async_context);
  napi_create_external(env, ring, NULL, NULL, &result);
  return result;
}

static struct aio_ring *ring_of(napi_env env, napi_value value) {
  void *ring = NULL;
  napi_valuetype type;
  if (napi_typeof(env, value, &type) != napi_ok || type != napi_external || napi_get_value_external(env, value, &ring) != napi_ok) return NULL;
  return ring;
}

/*
 * aioSubmit(ring, write, fd, buffer, offset, callback(result)) -> 0 when submitted, or
 * -errno when it was not (EAGAIN: the ring is full): then the callback is never called and
 * the caller does the IO another way. result: bytes transferred, or -errno (EAGAIN: it
 * would have blocked; do it another way).
 */
static napi_value js_aio_submit(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6], result;
  bool write;
  int32_t fd;
  void *data;
  size_t length;
  int64_t offset;
  napi_valuetype type;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  struct aio_ring *ring = argc == 6 ? ring_of(env, argv[0]) : NULL;
  if (ring == NULL || ring->closed || napi_get_value_bool(env, argv[1], &write) != napi_ok ||
      napi_get_value_int32(env, argv[2], &fd) != napi_ok || napi_get_buffer_info(env, argv[3], &data, &length) != napi_ok ||
      napi_get_value_int64(env, argv[4], &offset) != napi_ok || napi_typeof(env, argv[5], &type) != napi_ok || type != napi_function) {
    napi_throw_type_error(env, NULL, "expected (open ring, write, fd, buffer, offset, callback)");
    return NULL;
  }
  if (ring->inflight >= ring->depth) {
    napi_create_int32(env, -EAGAIN, &result);
    return result;
  }
  struct aio_request *request = calloc(1, sizeof *request);
  if (request == NULL) {
    napi_create_int32(env, -ENOMEM, &result);
    return result;
  }
  request->iocb.aio_data = (uint64_t)(uintptr_t)request;
  request->iocb.aio_lio_opcode = write ? IOCB_CMD_PWRITE : IOCB_CMD_PREAD;
  request->iocb.aio_fildes = (uint32_t)fd;
  request->iocb.aio_buf = (uint64_t)(uintptr_t)data;
  request->iocb.aio_nbytes = length;
  request->iocb.aio_offset = offset;
  request->iocb.aio_flags = IOCB_FLAG_RESFD;
  request->iocb.aio_resfd = (uint32_t)ring->eventfd;
  struct iocb *list[1] = { &request->iocb };
  for (;;) {
    request->iocb.aio_rw_flags = ring->nowait ? RWF_NOWAIT : 0;
    long submitted = sys_io_submit(ring->context, 1, list);
    if (submitted == 1) break;
    int error = submitted == 0 ? EAGAIN : errno;
    if (error == EINVAL && ring->nowait) {
      ring->nowait = 0; /* a kernel before 4.13: no RWF_NOWAIT in AIO */
      continue;
    }
    free(request);
    napi_create_int32(env, -error, &result);
    return result;
  }
  napi_create_reference(env, argv[5], 1, &request->callback);
  napi_create_reference(env, argv[3], 1, &request->buffer);
  ring->inflight += 1;
  if (ring->inflight == 1) uv_ref((uv_handle_t *)&ring->poll);
  napi_create_int32(env, 0, &result);
  return result;
}

static void on_closed(uv_handle_t *handle) {
  struct aio_ring *ring = handle->data;
  close(ring->eventfd);
  free(ring);
}

/* aioClose(ring): refused (throws EBUSY) while IO is in flight. */
static napi_value js_aio_close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  struct aio_ring *ring = argc == 1 ? ring_of(env, argv[0]) : NULL;
  if (ring == NULL || ring->closed) {
    napi_throw_type_error(env, NULL, "expected (open ring)");
    return NULL;
  }
  if (ring->inflight > 0) {
    throw_errno(env, "aioClose", EBUSY);
    return NULL;
  }
  ring->closed = 1;
  sys_io_destroy(ring->context);
  napi_async_destroy(env, ring->async_context);
  uv_poll_stop(&ring->poll);
  uv_close((uv_handle_t *)&ring->poll, on_closed);
  return NULL;
}

void register_aio(napi_env env, napi_value exports) {
  napi_value fn;
  napi_create_function(env, "aioOpen", NAPI_AUTO_LENGTH, js_aio_open, NULL, &fn);
  napi_set_named_property(env, exports, "aioOpen", fn);
  napi_create_function(env, "aioSubmit", NAPI_AUTO_LENGTH, js_aio_submit, NULL, &fn);
  napi_set_named_property(env, exports, "aioSubmit", fn);
  napi_create_function(env, "aioClose", NAPI_AUTO_LENGTH, js_aio_close, NULL, &fn);
  napi_set_named_property(env, exports, "aioClose", fn);
}
