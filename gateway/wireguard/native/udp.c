/*
 * The WireGuard endpoint's UDP socket with batched system calls, for Linux: recvmmsg on input,
 * sendmmsg on output, and UDP GSO (UDP_SEGMENT) for runs of equal-size datagrams to one address,
 * which is what a bulk TCP flow through the tunnel produces. node:dgram makes one recvmsg and one
 * sendmsg per datagram (plus a 64 KiB allocation, an address object and a callback each way); here a
 * batch of up to 64 datagrams costs one call each way and one callback into JavaScript.
 *
 * open(family, address, port, bufferBytes, onBatch[, gso = true]) -> socket
 *   A non-blocking socket bound to address:port (family 4 or 6; a family-6 socket is dual-stack),
 *   polled on the calling thread's event loop. onBatch(count, data) is called for each batch read:
 *   data is a new Buffer holding the datagrams back to back, and meta(socket) describes each in
 *   RECV_META ints: offset, length, port, family, then the 16 address bytes (IPv4 in the first 4).
 *   gso false: never UDP GSO (as on a kernel without it).
 * meta(socket) -> Int32Array   the receive descriptors (valid during onBatch only)
 * localPort(socket) -> number
 * send(socket, datagrams, dest, count) -> number of datagrams not sent
 *   datagrams: an array of Buffers; dest: an Int32Array of SEND_META ints per datagram: port,
 *   family, then the 16 address bytes. Consecutive datagrams to one address whose sizes are equal
 *   (the last of a run may be shorter) go out as one GSO send while the kernel accepts them.
 * stats(socket) -> [recvCalls, recvDatagrams, sendCalls, sendDatagrams, gsoSends, errors, lastErrno, gso]
 *   (gso: 1 while UDP GSO is in use; the kernel may lack it, or a path refuse it)
 * ntop(family, bytes) -> string, pton(string, bytes) -> family (4, 6, or 0 when not an address):
 *   address.c
 * close(socket)
 * Every argument is checked: a bad one throws a TypeError, never an out-of-bounds access.
 */
#define _GNU_SOURCE
#include <node_api.h>
#include <uv.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "address.h"

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif

#define BATCH 64
#define SLOT 65536
#define RECV_META 8
#define SEND_META 6
#define MAX_GSO_SEGMENTS 64
#define MAX_GSO_BYTES 65000
/* Batches read per readiness event before the loop gets its turn (fairness with timers and TLS). */
#define BATCHES_PER_EVENT 8

typedef struct sock {
    napi_env env;
    uv_poll_t poll;
    int fd;
    int family;
    int closed;
    int in_callback;
    int napi_released;
    int refs; /* the libuv handle and the JavaScript external: freed when both let go */
    int gso;
    napi_ref on_batch;
    napi_ref meta_ref;
    napi_async_context async;
    int32_t *meta;
    uint8_t *slots;
    struct mmsghdr rmsgs[BATCH];
    struct iovec riov[BATCH];
    struct sockaddr_storage raddr[BATCH];
    double stats[7];
} sock;

enum { ST_RECV_CALLS, ST_RECV_DGRAMS, ST_SEND_CALLS, ST_SEND_DGRAMS, ST_GSO, ST_ERRORS, ST_ERRNO };

static napi_value throw_type (napi_env env, const char *message)
{
    napi_throw_type_error(env, NULL, message);
    return NULL;
}

static void throw_errno (napi_env env, const char *what, int err)
{
    char message[160];
    snprintf(message, sizeof message, "%s: %s", what, strerror(err));
    napi_value msg, code, error;
    napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &msg);
    napi_create_error(env, NULL, msg, &error);
    const char *name = err == EADDRINUSE ? "EADDRINUSE" : err == EADDRNOTAVAIL ? "EADDRNOTAVAIL" : err == EACCES ? "EACCES" :
        err == EAFNOSUPPORT ? "EAFNOSUPPORT" : "EIO";
    napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &code);
    napi_set_named_property(env, error, "code", code);
    napi_throw(env, error);
}

static sock *get_sock (napi_env env, napi_value value)
{
    sock *s = NULL;
    napi_valuetype type;
    if (napi_typeof(env, value, &type) != napi_ok || type != napi_external) return NULL;
    if (napi_get_value_external(env, value, (void **)&s) != napi_ok) return NULL;
    return s;
}

/* Fills sa from a family and 16 address bytes; returns its length, or 0. */
static socklen_t to_sockaddr (struct sockaddr_storage *sa, int sock_family, int family, const uint8_t *addr, int port)
{
    memset(sa, 0, sizeof *sa);
    if (port < 0 || port > 65535) return 0;
    if (sock_family == AF_INET) {
        if (family != 4) return 0;
        struct sockaddr_in *in = (struct sockaddr_in *)sa;
        in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)port);
        memcpy(&in->sin_addr, addr, 4);
        return sizeof *in;
    }
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)sa;
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons((uint16_t)port);
    if (family == 4) {
        /* A dual-stack socket reaches IPv4 through the mapped form ::ffff:a.b.c.d. */
        in6->sin6_addr.s6_addr[10] = 0xff;
        in6->sin6_addr.s6_addr[11] = 0xff;
        memcpy(&in6->sin6_addr.s6_addr[12], addr, 4);
    } else if (family == 6) {
        memcpy(&in6->sin6_addr, addr, 16);
    } else {
        return 0;
    }
    return sizeof *in6;
}

static void release (sock *s)
{
    if (--s->refs > 0) return;
    free(s->slots);
    free(s);
}

static void finish_close (uv_handle_t *handle)
{
    release(handle->data);
}

static void finalize_external (napi_env env, void *data, void *hint)
{
    (void)env;
    (void)hint;
    release(data);
}

/* The references into JavaScript; not from inside onBatch (deliver releases them after it). */
static void release_napi (sock *s)
{
    if (s->napi_released) return;
    s->napi_released = 1;
    napi_delete_reference(s->env, s->on_batch);
    napi_delete_reference(s->env, s->meta_ref);
    napi_async_destroy(s->env, s->async);
}

/* Stops polling and closes the socket; the struct lives on until libuv and the GC let go. */
static void close_sock (sock *s)
{
    if (s->closed) return;
    s->closed = 1;
    uv_poll_stop(&s->poll);
    close(s->fd);
    napi_remove_env_cleanup_hook(s->env, (void (*)(void *))close_sock, s);
    if (!s->in_callback) release_napi(s);
    uv_close((uv_handle_t *)&s->poll, finish_close);
}

/* One batch: copies the datagrams into one new Buffer, describes them in meta, calls onBatch. */
static int deliver (sock *s, int count)
{
    size_t total = 0;
    for (int i = 0; i < count; i++) total += s->rmsgs[i].msg_len;
    napi_env env = s->env;
    napi_handle_scope scope;
    napi_open_handle_scope(env, &scope);
    uint8_t *data = NULL;
    napi_value buffer, fn, recv, args[2], result;
    if (napi_create_buffer(env, total, (void **)&data, &buffer) != napi_ok) {
        napi_close_handle_scope(env, scope);
        return -1;
    }
    size_t offset = 0;
    for (int i = 0; i < count; i++) {
        uint32_t len = s->rmsgs[i].msg_len;
        memcpy(data + offset, s->slots + (size_t)i * SLOT, len);
        int32_t *m = s->meta + i * RECV_META;
        m[0] = (int32_t)offset;
        m[1] = (int32_t)len;
        uint8_t *addr = (uint8_t *)(m + 4);
        memset(addr, 0, 16);
        struct sockaddr_storage *sa = &s->raddr[i];
        if (sa->ss_family == AF_INET) {
            struct sockaddr_in *in = (struct sockaddr_in *)sa;
            m[2] = ntohs(in->sin_port);
            m[3] = 4;
            memcpy(addr, &in->sin_addr, 4);
        } else {
            struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)sa;
            m[2] = ntohs(in6->sin6_port);
            if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
                m[3] = 4;
                memcpy(addr, &in6->sin6_addr.s6_addr[12], 4);
            } else {
                m[3] = 6;
                memcpy(addr, &in6->sin6_addr, 16);
            }
        }
        offset += len;
    }
    napi_get_reference_value(env, s->on_batch, &fn);
    napi_get_global(env, &recv);
    napi_create_int32(env, count, &args[0]);
    args[1] = buffer;
    s->in_callback = 1;
    napi_status status = napi_make_callback(env, s->async, recv, fn, 2, args, &result);
    s->in_callback = 0;
    if (s->closed) release_napi(s);
    if (status == napi_pending_exception) {
        napi_value err;
        napi_get_and_clear_last_exception(env, &err);
        napi_fatal_exception(env, err);
    }
    napi_close_handle_scope(env, scope);
    return 0;
}

static void on_readable (uv_poll_t *handle, int status, int events)
{
    sock *s = handle->data;
    if (status < 0 || !(events & UV_READABLE)) return;
    for (int round = 0; round < BATCHES_PER_EVENT && !s->closed; round++) {
        for (int i = 0; i < BATCH; i++) {
            s->rmsgs[i].msg_hdr.msg_namelen = sizeof s->raddr[i];
            s->rmsgs[i].msg_hdr.msg_flags = 0;
        }
        int n = recvmmsg(s->fd, s->rmsgs, BATCH, MSG_DONTWAIT, NULL);
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                s->stats[ST_ERRORS]++;
                s->stats[ST_ERRNO] = errno;
            }
            return;
        }
        s->stats[ST_RECV_CALLS]++;
        s->stats[ST_RECV_DGRAMS] += n;
        if (n == 0 || deliver(s, n) != 0) return;
        if (n < BATCH) return;
    }
}

static napi_value js_open (napi_env env, napi_callback_info info)
{
    size_t argc = 6;
    napi_value argv[6];
    napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
    if (argc < 5) return throw_type(env, "open(family, address, port, bufferBytes, onBatch[, gso])");
    bool want_gso = true;
    if (argc == 6 && napi_get_value_bool(env, argv[5], &want_gso) != napi_ok) return throw_type(env, "open: gso must be a boolean");
    int32_t family, port, buffer_bytes;
    char address[64];
    size_t address_len;
    napi_valuetype fn_type;
    if (napi_get_value_int32(env, argv[0], &family) != napi_ok || (family != 4 && family != 6) ||
        napi_get_value_string_utf8(env, argv[1], address, sizeof address, &address_len) != napi_ok ||
        napi_get_value_int32(env, argv[2], &port) != napi_ok || port < 0 || port > 65535 ||
        napi_get_value_int32(env, argv[3], &buffer_bytes) != napi_ok || buffer_bytes < 0 ||
        napi_typeof(env, argv[4], &fn_type) != napi_ok || fn_type != napi_function) {
        return throw_type(env, "open(family 4|6, address string, port 0-65535, bufferBytes >= 0, onBatch function)");
    }
    uint8_t addr[16] = { 0 };
    int parsed_family = 0;
    if (inet_pton(AF_INET, address, addr) == 1) parsed_family = 4;
    else if (inet_pton(AF_INET6, address, addr) == 1) parsed_family = 6;
    if (parsed_family == 0 || (family == 4 && parsed_family != 4)) return throw_type(env, "open: not an address of that family");

    int fd = socket(family == 4 ? AF_INET : AF_INET6, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        throw_errno(env, "socket", errno);
        return NULL;
    }
    if (family == 6) {
        int off = 0;
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off);
    }
    struct sockaddr_storage sa;
    socklen_t sa_len = to_sockaddr(&sa, family == 4 ? AF_INET : AF_INET6, parsed_family, addr, port);
    if (bind(fd, (struct sockaddr *)&sa, sa_len) != 0) {
        int err = errno;
        close(fd);
        throw_errno(env, "bind", err);
        return NULL;
    }
    if (buffer_bytes > 0) {
        /* As wireguard-go does: the forced size where the process may, else what the limit allows. */
        if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &buffer_bytes, sizeof buffer_bytes) != 0) {
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buffer_bytes, sizeof buffer_bytes);
        }
        if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &buffer_bytes, sizeof buffer_bytes) != 0) {
            setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buffer_bytes, sizeof buffer_bytes);
        }
    }

    sock *s = calloc(1, sizeof *s);
    uint8_t *slots = malloc((size_t)BATCH * SLOT);
    if (s == NULL || slots == NULL) {
        free(s);
        free(slots);
        close(fd);
        throw_errno(env, "open", ENOMEM);
        return NULL;
    }
    s->env = env;
    s->fd = fd;
    s->family = family == 4 ? AF_INET : AF_INET6;
    /* UDP GSO only where the kernel has it (4.18+): an older one ignores the UDP_SEGMENT message
     * and would send a run as one oversized datagram. Asking for the option tells (as wireguard-go
     * does); without it every datagram is a message of its own, still batched by sendmmsg. */
    int gso_size = 0;
    socklen_t gso_len = sizeof gso_size;
    s->gso = want_gso && getsockopt(fd, IPPROTO_UDP, UDP_SEGMENT, &gso_size, &gso_len) == 0;
    s->refs = 2;
    s->slots = slots;
    for (int i = 0; i < BATCH; i++) {
        s->riov[i].iov_base = slots + (size_t)i * SLOT;
        s->riov[i].iov_len = SLOT;
        s->rmsgs[i].msg_hdr.msg_iov = &s->riov[i];
        s->rmsgs[i].msg_hdr.msg_iovlen = 1;
        s->rmsgs[i].msg_hdr.msg_name = &s->raddr[i];
    }

    napi_value meta_buffer, meta, name, handle;
    void *meta_data = NULL;
    napi_create_arraybuffer(env, (size_t)BATCH * RECV_META * 4, &meta_data, &meta_buffer);
    napi_create_typedarray(env, napi_int32_array, (size_t)BATCH * RECV_META, meta_buffer, 0, &meta);
    s->meta = meta_data;
    napi_create_reference(env, meta, 1, &s->meta_ref);
    napi_create_reference(env, argv[4], 1, &s->on_batch);
    napi_create_string_utf8(env, "WireGuardUdp", NAPI_AUTO_LENGTH, &name);
    napi_async_init(env, NULL, name, &s->async);

    uv_loop_t *loop = NULL;
    napi_get_uv_event_loop(env, &loop);
    uv_poll_init(loop, &s->poll, fd);
    s->poll.data = s;
    uv_poll_start(&s->poll, UV_READABLE, on_readable);
    napi_add_env_cleanup_hook(env, (void (*)(void *))close_sock, s);
    napi_create_external(env, s, finalize_external, NULL, &handle);
    return handle;
}

/* The open socket that is a function's only argument; NULL (a TypeError thrown) otherwise. */
static sock *socket_arg (napi_env env, napi_callback_info info, const char *usage)
{
    size_t argc = 1;
    napi_value argv[1];
    napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
    sock *s = argc == 1 ? get_sock(env, argv[0]) : NULL;
    if (s == NULL || s->closed) {
        throw_type(env, usage);
        return NULL;
    }
    return s;
}

static napi_value js_meta (napi_env env, napi_callback_info info)
{
    napi_value meta;
    sock *s = socket_arg(env, info, "meta(socket)");
    if (s == NULL) return NULL;
    napi_get_reference_value(env, s->meta_ref, &meta);
    return meta;
}

static napi_value js_local_port (napi_env env, napi_callback_info info)
{
    napi_value result;
    sock *s = socket_arg(env, info, "localPort(socket)");
    if (s == NULL) return NULL;
    struct sockaddr_storage sa;
    socklen_t len = sizeof sa;
    int port = -1;
    if (getsockname(s->fd, (struct sockaddr *)&sa, &len) == 0) {
        port = sa.ss_family == AF_INET ? ntohs(((struct sockaddr_in *)&sa)->sin_port) : ntohs(((struct sockaddr_in6 *)&sa)->sin6_port);
    }
    napi_create_int32(env, port, &result);
    return result;
}

/* Sends msgs[0, n) with sendmmsg; a message the kernel refuses is counted and skipped. Returns the
 * datagrams not sent. A GSO send refused with EINVAL/EIO/ENOTSUP is retried without GSO (and EIO or
 * ENOTSUP turns GSO off for this socket: the path cannot segment). */
static int flush (sock *s, struct mmsghdr *msgs, int n, const int *segments, int *retry)
{
    int failed = 0;
    int i = 0;
    while (i < n) {
        int r = sendmmsg(s->fd, msgs + i, (unsigned)(n - i), MSG_DONTWAIT);
        s->stats[ST_SEND_CALLS]++;
        if (r > 0) {
            i += r;
            continue;
        }
        int err = errno;
        if (err == EINTR) continue;
        if (segments[i] > 1 && (err == EINVAL || err == EIO || err == ENOTSUP || err == EOPNOTSUPP)) {
            if (err != EINVAL) s->gso = 0;
            retry[i] = 1;
            i++;
            continue;
        }
        s->stats[ST_ERRORS]++;
        s->stats[ST_ERRNO] = err;
        if (err == EAGAIN || err == EWOULDBLOCK || err == ENOBUFS) {
            /* The kernel's queue is full: the rest of this batch is dropped like a full link drops. */
            for (int j = i; j < n; j++) failed += segments[j];
            return failed;
        }
        failed += segments[i];
        i++;
    }
    return failed;
}

static napi_value js_send (napi_env env, napi_callback_info info)
{
    size_t argc = 4;
    napi_value argv[4], result;
    napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
    sock *s = argc == 4 ? get_sock(env, argv[0]) : NULL;
    bool is_array = false;
    uint32_t array_len = 0, count = 0;
    napi_typedarray_type dest_type;
    size_t dest_len = 0;
    void *dest_data = NULL;
    if (s == NULL || s->closed ||
        napi_is_array(env, argv[1], &is_array) != napi_ok || !is_array ||
        napi_get_array_length(env, argv[1], &array_len) != napi_ok ||
        napi_get_typedarray_info(env, argv[2], &dest_type, &dest_len, &dest_data, NULL, NULL) != napi_ok ||
        dest_type != napi_int32_array ||
        napi_get_value_uint32(env, argv[3], &count) != napi_ok ||
        count > array_len || (size_t)count * SEND_META > dest_len) {
        return throw_type(env, "send(socket, datagrams Buffer[], dest Int32Array, count)");
    }
    const int32_t *dest = dest_data;
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    struct sockaddr_storage addrs[BATCH];
    union { char buf[CMSG_SPACE(sizeof(uint16_t))]; struct cmsghdr align; } control[BATCH];
    int segments[BATCH], first[BATCH], retry[BATCH];
    size_t run_bytes[BATCH];
    int failed = 0;
    uint32_t k = 0;
    while (k < count) {
        /* Up to BATCH messages, each a single datagram or a GSO run. */
        int n = 0, used_iov = 0;
        while (k < count && n < BATCH && used_iov < BATCH) {
            napi_value element;
            void *data = NULL;
            size_t len = 0;
            bool is_buffer = false;
            const int32_t *m = dest + (size_t)k * SEND_META;
            if (napi_get_element(env, argv[1], k, &element) != napi_ok ||
                napi_is_buffer(env, element, &is_buffer) != napi_ok || !is_buffer ||
                napi_get_buffer_info(env, element, &data, &len) != napi_ok || len > SLOT) {
                return throw_type(env, "send: datagrams must be Buffers of at most 65,536 bytes");
            }
            /* Joins the previous message as one more GSO segment when it goes to the same place,
             * every earlier segment has this size or more, and the run's last segment was full. */
            if (n > 0 && s->gso) {
                struct mmsghdr *prev = &msgs[n - 1];
                const int32_t *pm = dest + (size_t)first[n - 1] * SEND_META;
                size_t head = prev->msg_hdr.msg_iov[0].iov_len;
                size_t tail = prev->msg_hdr.msg_iov[prev->msg_hdr.msg_iovlen - 1].iov_len;
                if (memcmp(pm, m, SEND_META * 4) == 0 && len > 0 && len <= head && tail == head &&
                    segments[n - 1] < MAX_GSO_SEGMENTS && run_bytes[n - 1] + len <= MAX_GSO_BYTES) {
                    iov[used_iov].iov_base = data;
                    iov[used_iov].iov_len = len;
                    used_iov++;
                    prev->msg_hdr.msg_iovlen++;
                    segments[n - 1]++;
                    run_bytes[n - 1] += len;
                    k++;
                    continue;
                }
            }
            socklen_t sa_len = to_sockaddr(&addrs[n], s->family, m[1], (const uint8_t *)(m + 2), m[0]);
            if (sa_len == 0) {
                s->stats[ST_ERRORS]++;
                s->stats[ST_ERRNO] = EAFNOSUPPORT;
                failed++;
                k++;
                continue;
            }
            iov[used_iov].iov_base = data;
            iov[used_iov].iov_len = len;
            memset(&msgs[n], 0, sizeof msgs[n]);
            msgs[n].msg_hdr.msg_name = &addrs[n];
            msgs[n].msg_hdr.msg_namelen = sa_len;
            msgs[n].msg_hdr.msg_iov = &iov[used_iov];
            msgs[n].msg_hdr.msg_iovlen = 1;
            segments[n] = 1;
            run_bytes[n] = len;
            first[n] = (int)k;
            retry[n] = 0;
            used_iov++;
            n++;
            k++;
        }
        /* A run of more than one segment carries UDP_SEGMENT = its first datagram's size. */
        for (int j = 0; j < n; j++) {
            if (segments[j] < 2) continue;
            struct msghdr *h = &msgs[j].msg_hdr;
            h->msg_control = control[j].buf;
            h->msg_controllen = sizeof control[j].buf;
            struct cmsghdr *c = CMSG_FIRSTHDR(h);
            c->cmsg_level = IPPROTO_UDP;
            c->cmsg_type = UDP_SEGMENT;
            c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
            uint16_t size = (uint16_t)h->msg_iov[0].iov_len;
            memcpy(CMSG_DATA(c), &size, sizeof size);
            s->stats[ST_GSO]++;
        }
        failed += flush(s, msgs, n, segments, retry);
        /* Runs the kernel would not segment go again, one datagram per message. */
        for (int j = 0; j < n; j++) {
            if (!retry[j]) continue;
            struct msghdr *h = &msgs[j].msg_hdr;
            int parts = segments[j];
            struct mmsghdr single[MAX_GSO_SEGMENTS];
            int ones[MAX_GSO_SEGMENTS], no_retry[MAX_GSO_SEGMENTS];
            for (int p = 0; p < parts; p++) {
                memset(&single[p], 0, sizeof single[p]);
                single[p].msg_hdr.msg_name = h->msg_name;
                single[p].msg_hdr.msg_namelen = h->msg_namelen;
                single[p].msg_hdr.msg_iov = &h->msg_iov[p];
                single[p].msg_hdr.msg_iovlen = 1;
                ones[p] = 1;
                no_retry[p] = 0;
            }
            failed += flush(s, single, parts, ones, no_retry);
        }
    }
    s->stats[ST_SEND_DGRAMS] += count - failed;
    napi_create_int32(env, failed, &result);
    return result;
}

static napi_value js_stats (napi_env env, napi_callback_info info)
{
    napi_value result, value;
    sock *s = socket_arg(env, info, "stats(socket)");
    if (s == NULL) return NULL;
    napi_create_array_with_length(env, 8, &result);
    for (uint32_t i = 0; i < 7; i++) {
        napi_create_double(env, s->stats[i], &value);
        napi_set_element(env, result, i, value);
    }
    napi_create_double(env, s->gso, &value);
    napi_set_element(env, result, 7, value);
    return result;
}

static napi_value js_close (napi_env env, napi_callback_info info)
{
    size_t argc = 1;
    napi_value argv[1];
    napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
    sock *s = argc == 1 ? get_sock(env, argv[0]) : NULL;
    if (s == NULL) return throw_type(env, "close(socket)");
    close_sock(s);
    return NULL;
}

NAPI_MODULE_INIT()
{
    napi_property_descriptor props[] = {
        { "open", NULL, js_open, NULL, NULL, NULL, napi_default, NULL },
        { "meta", NULL, js_meta, NULL, NULL, NULL, napi_default, NULL },
        { "localPort", NULL, js_local_port, NULL, NULL, NULL, napi_default, NULL },
        { "send", NULL, js_send, NULL, NULL, NULL, napi_default, NULL },
        { "stats", NULL, js_stats, NULL, NULL, NULL, napi_default, NULL },
        { "ntop", NULL, js_ntop, NULL, NULL, NULL, napi_default, NULL },
        { "pton", NULL, js_pton, NULL, NULL, NULL, napi_default, NULL },
        { "close", NULL, js_close, NULL, NULL, NULL, napi_default, NULL },
    };
    napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
    return exports;
}
