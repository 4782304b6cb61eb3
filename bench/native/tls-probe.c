/*
 * Read-only probes for bench/tls-memory.ts (not part of the gateway): what OpenSSL and glibc malloc
 * hold per TLS connection inside a node process.
 *
 * ctxMode(context._external) -> SSL_CTX_get_mode of a SecureContext's SSL_CTX, or undefined.
 * watchSslMode(context._external): records SSL_get_mode of every SSL of that SSL_CTX that logs a
 *   TLS secret (a keylog callback: once per handshake at least); sslMode() -> [last mode, calls].
 *   This is the mode of a live connection, which node may set per SSL after SSL_new.
 * mallinfo() -> [arena, hblkhd, uordblks, fordblks] of glibc's mallinfo2 (bytes; all arenas).
 * liveStart(), liveDump(path): the LD_PRELOAD recorder in malloc-live.c, when it is loaded.
 *
 * The SSL_CTX* sits in a plain v8::External (node's SecureContext::CtxGetter). Node-API's
 * napi_get_value_external does not return such a value as it is (in node 20.20 it unwraps its own
 * wrapper first), so v8::External::Value and v8::Value::IsExternal are called, found by their
 * Itanium-ABI names in the node binary; without them every probe returns undefined.
 */
#define _GNU_SOURCE
#include <node_api.h>
#include <openssl/ssl.h>
#include <dlfcn.h>
#include <malloc.h>
#include <stdbool.h>

typedef bool (*is_external_fn)(const void *value);
typedef void *(*external_value_fn)(const void *external);

static long last_ssl_mode = -1;
static long keylog_calls;

static napi_value number (napi_env env, double v)
{
    napi_value r;
    napi_create_double(env, v, &r);
    return r;
}

/* The SSL_CTX* behind argument 0 when it is a v8::External, else NULL. */
static SSL_CTX *context_argument (napi_env env, napi_callback_info info)
{
    size_t argc = 1;
    napi_value argv[1];
    if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1) return NULL;
    is_external_fn is_external = (is_external_fn)dlsym(RTLD_DEFAULT, "_ZNK2v85Value10IsExternalEv");
    external_value_fn external_value = (external_value_fn)dlsym(RTLD_DEFAULT, "_ZNK2v88External5ValueEv");
    /* A napi_value is node's v8::Local<v8::Value>: the address `this` is in those calls. */
    const void *value = *(const void **)&argv[0];
    if (is_external == NULL || external_value == NULL || value == NULL || !is_external(value)) return NULL;
    return external_value(value);
}

static void keylog (const SSL *ssl, const char *line)
{
    (void)line;
    last_ssl_mode = (long)SSL_get_mode((SSL *)ssl);
    keylog_calls++;
}

static napi_value ctx_mode (napi_env env, napi_callback_info info)
{
    SSL_CTX *ctx = context_argument(env, info);
    return ctx == NULL ? NULL : number(env, (double)SSL_CTX_get_mode(ctx));
}

static napi_value watch_ssl_mode (napi_env env, napi_callback_info info)
{
    SSL_CTX *ctx = context_argument(env, info);
    if (ctx != NULL) SSL_CTX_set_keylog_callback(ctx, keylog);
    return number(env, ctx != NULL);
}

static napi_value ssl_mode (napi_env env, napi_callback_info info)
{
    (void)info;
    napi_value a;
    napi_create_array(env, &a);
    napi_set_element(env, a, 0, number(env, (double)last_ssl_mode));
    napi_set_element(env, a, 1, number(env, (double)keylog_calls));
    return a;
}

static napi_value malloc_totals (napi_env env, napi_callback_info info)
{
    (void)info;
    struct mallinfo2 m = mallinfo2();
    double v[] = { (double)m.arena, (double)m.hblkhd, (double)m.uordblks, (double)m.fordblks };
    napi_value a;
    napi_create_array(env, &a);
    for (uint32_t i = 0; i < 4; i++) napi_set_element(env, a, i, number(env, v[i]));
    return a;
}

static napi_value live_start (napi_env env, napi_callback_info info)
{
    (void)info;
    void (*start)(void) = (void (*)(void))dlsym(RTLD_DEFAULT, "malloc_live_start");
    if (start != NULL) start();
    return number(env, start != NULL);
}

static napi_value live_dump (napi_env env, napi_callback_info info)
{
    size_t argc = 1;
    napi_value argv[1];
    char path[4096];
    size_t len = 0;
    napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
    if (argc < 1 || napi_get_value_string_utf8(env, argv[0], path, sizeof path, &len) != napi_ok || len == 0 || len >= sizeof path - 1) return number(env, 0);
    int (*dump)(const char *) = (int (*)(const char *))dlsym(RTLD_DEFAULT, "malloc_live_dump");
    return number(env, dump != NULL && dump(path) == 0);
}

NAPI_MODULE_INIT()
{
    static const struct { const char *name; napi_callback fn; } fns[] = {
        { "ctxMode", ctx_mode }, { "watchSslMode", watch_ssl_mode }, { "sslMode", ssl_mode },
        { "mallinfo", malloc_totals }, { "liveStart", live_start }, { "liveDump", live_dump },
    };
    for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
        napi_value f;
        napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].fn, NULL, &f);
        napi_set_named_property(env, exports, fns[i].name, f);
    }
    return exports;
}
