/* Address text for the batched UDP socket (address.c). */
#ifndef CC_UDP_ADDRESS_H
#define CC_UDP_ADDRESS_H
#include <node_api.h>

napi_value js_ntop (napi_env env, napi_callback_info info);
napi_value js_pton (napi_env env, napi_callback_info info);

#endif
