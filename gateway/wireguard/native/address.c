/*
 * Address text for the batched UDP socket (udp.c exports these beside it): the socket's
 * descriptors carry 16 address bytes; JavaScript names endpoints as text.
 *
 * ntop(family 4|6, bytes) -> the address as text
 * pton(text, bytes Uint8Array(16)) -> 4, 6, or 0 when not an address; an IPv4-mapped IPv6 address
 *   (RFC 4291 2.5.5.2) comes back as IPv4, the bytes in the first 4
 */
#include <node_api.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include "address.h"

static napi_value throw_type (napi_env env, const char *message)
{
    napi_throw_type_error(env, NULL, message);
    return NULL;
}

napi_value js_ntop (napi_env env, napi_callback_info info)
{
    size_t argc = 2;
    napi_value argv[2], result;
    napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
    int32_t family;
    napi_typedarray_type type;
    size_t len = 0;
    void *data = NULL;
    if (argc < 2 || napi_get_value_int32(env, argv[0], &family) != napi_ok || (family != 4 && family != 6) ||
        napi_get_typedarray_info(env, argv[1], &type, &len, &data, NULL, NULL) != napi_ok ||
        type != napi_uint8_array || len < (family == 4 ? 4u : 16u)) {
        return throw_type(env, "ntop(family 4|6, bytes Uint8Array)");
    }
    char text[INET6_ADDRSTRLEN];
    inet_ntop(family == 4 ? AF_INET : AF_INET6, data, text, sizeof text);
    napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &result);
    return result;
}

napi_value js_pton (napi_env env, napi_callback_info info)
{
    size_t argc = 2;
    napi_value argv[2], result;
    napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
    char text[64];
    size_t text_len = 0;
    napi_typedarray_type type;
    size_t len = 0;
    void *data = NULL;
    if (argc < 2 || napi_get_value_string_utf8(env, argv[0], text, sizeof text, &text_len) != napi_ok ||
        napi_get_typedarray_info(env, argv[1], &type, &len, &data, NULL, NULL) != napi_ok ||
        type != napi_uint8_array || len < 16) {
        return throw_type(env, "pton(address string, bytes Uint8Array(16))");
    }
    uint8_t addr[16] = { 0 };
    int family = 0;
    if (inet_pton(AF_INET, text, addr) == 1) family = 4;
    else if (inet_pton(AF_INET6, text, addr) == 1) family = 6;
    if (family == 6 && IN6_IS_ADDR_V4MAPPED((struct in6_addr *)addr)) {
        memmove(addr, addr + 12, 4);
        memset(addr + 4, 0, 12);
        family = 4;
    }
    if (family != 0) memcpy(data, addr, 16);
    napi_create_int32(env, family, &result);
    return result;
}
