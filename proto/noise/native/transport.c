/*
 * ChaCha20-Poly1305 (RFC 8439) for WireGuard transport messages, through the OpenSSL that the
 * running Node links (its symbols are resolved from the node binary when this module loads, so
 * there is nothing else to install). One cipher context per direction: each packet sets its nonce,
 * and the key only when it differs from the last one, where node:crypto creates a cipher object per
 * packet.
 *
 * seal(key, counter, buf, offset, length): encrypts buf[offset, offset+length) in place and writes
 *   the 16-byte tag after it; returns length + 16, or -1.
 * open(key, counter, buf, offset, length): authenticates and decrypts the ciphertext-and-tag at
 *   buf[offset, offset+length) in place; returns length - 16, or -1 (then the output range is zeroed,
 *   so no unauthenticated plaintext is left behind).
 * sealMessage(key, counter, buf, offset, packetLength, receiver): a whole transport message at
 *   buf[offset, ...) whose packet already sits at offset + 16: zero padding to a multiple of 16, the
 *   header (type 4, receiver index, counter), the seal; returns the message length, or -1.
 * The nonce is WireGuard's: 4 zero bytes, then the 64-bit counter little-endian (paper 5.4.6).
 * Every length is checked here: a bad argument is -1, never an out-of-bounds access.
 */
#include <node_api.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define KEY_LEN 32
#define NONCE_LEN 12
#define TAG_LEN 16
#define HEADER_LEN 16
#define PADDING 16
#define MESSAGE_TRANSPORT 4
#define MAX_LEN (1 << 20)

typedef struct {
    EVP_CIPHER_CTX *enc;
    EVP_CIPHER_CTX *dec;
    /* The key each context holds: a packet on the same key (a bulk flow) only sets the nonce. */
    uint8_t enc_key[KEY_LEN];
    uint8_t dec_key[KEY_LEN];
    int enc_keyed;
    int dec_keyed;
} contexts;

typedef struct {
    contexts *c;
    uint8_t *key;
    uint64_t counter;
    uint8_t *buf;
    size_t buf_len;
    uint32_t offset;
    uint32_t length;
    uint32_t receiver;
} call;

static void free_contexts (napi_env env, void *data, void *hint)
{
    (void)env;
    (void)hint;
    contexts *c = data;
    EVP_CIPHER_CTX_free(c->enc);
    EVP_CIPHER_CTX_free(c->dec);
    OPENSSL_cleanse(c, sizeof *c);
    free(c);
}

static napi_value int_value (napi_env env, int32_t v)
{
    napi_value r;
    napi_create_int32(env, v, &r);
    return r;
}

/* Reads (key, counter, buf, offset, length[, receiver]); 0 when every type and the key size are right. */
static int read_call (napi_env env, napi_callback_info info, size_t want, call *a)
{
    size_t argc = 6;
    napi_value argv[6];
    void *instance, *key, *buf;
    size_t key_len;
    bool lossless;
    if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < want) return -1;
    if (napi_get_instance_data(env, &instance) != napi_ok || instance == NULL) return -1;
    if (napi_get_buffer_info(env, argv[0], &key, &key_len) != napi_ok || key_len != KEY_LEN) return -1;
    if (napi_get_value_bigint_uint64(env, argv[1], &a->counter, &lossless) != napi_ok || !lossless) return -1;
    if (napi_get_buffer_info(env, argv[2], &buf, &a->buf_len) != napi_ok) return -1;
    if (napi_get_value_uint32(env, argv[3], &a->offset) != napi_ok) return -1;
    if (napi_get_value_uint32(env, argv[4], &a->length) != napi_ok || a->length > MAX_LEN) return -1;
    if (want > 5 && napi_get_value_uint32(env, argv[5], &a->receiver) != napi_ok) return -1;
    a->c = instance;
    a->key = key;
    a->buf = buf;
    return 0;
}

/* True when buf[offset, offset + need) is inside the buffer. */
static int fits (const call *a, size_t need)
{
    return (size_t)a->offset <= a->buf_len && a->buf_len - a->offset >= need;
}

static void make_nonce (uint8_t nonce[NONCE_LEN], uint64_t counter)
{
    memset(nonce, 0, 4);
    for (int i = 0; i < 8; i++) nonce[4 + i] = (uint8_t)(counter >> (8 * i));
}

/* The key argument for EVP_*Init_ex: NULL (keep the key) when the context already holds this one. */
static const uint8_t *key_for (uint8_t held[KEY_LEN], int *keyed, const uint8_t *key)
{
    if (*keyed && CRYPTO_memcmp(held, key, KEY_LEN) == 0) return NULL;
    memcpy(held, key, KEY_LEN);
    *keyed = 1;
    return key;
}

static int seal_in_place (contexts *c, const uint8_t *key, uint64_t counter, uint8_t *data, uint32_t length)
{
    uint8_t nonce[NONCE_LEN];
    int n;
    make_nonce(nonce, counter);
    if (EVP_EncryptInit_ex(c->enc, NULL, NULL, key_for(c->enc_key, &c->enc_keyed, key), nonce) == 1 &&
        EVP_EncryptUpdate(c->enc, data, &n, data, (int)length) == 1 &&
        EVP_EncryptFinal_ex(c->enc, data + length, &n) == 1 &&
        EVP_CIPHER_CTX_ctrl(c->enc, EVP_CTRL_AEAD_GET_TAG, TAG_LEN, data + length) == 1) return 0;
    c->enc_keyed = 0;
    return -1;
}

static napi_value seal (napi_env env, napi_callback_info info)
{
    call a;
    if (read_call(env, info, 5, &a) != 0 || !fits(&a, (size_t)a.length + TAG_LEN)) return int_value(env, -1);
    if (seal_in_place(a.c, a.key, a.counter, a.buf + a.offset, a.length) != 0) return int_value(env, -1);
    return int_value(env, (int32_t)(a.length + TAG_LEN));
}

static napi_value seal_message (napi_env env, napi_callback_info info)
{
    call a;
    if (read_call(env, info, 6, &a) != 0) return int_value(env, -1);
    uint32_t padded = (a.length + PADDING - 1) & ~(uint32_t)(PADDING - 1);
    if (!fits(&a, (size_t)HEADER_LEN + padded + TAG_LEN)) return int_value(env, -1);
    uint8_t *m = a.buf + a.offset;
    memset(m + HEADER_LEN + a.length, 0, padded - a.length);
    m[0] = MESSAGE_TRANSPORT;
    m[1] = m[2] = m[3] = 0;
    for (int i = 0; i < 4; i++) m[4 + i] = (uint8_t)(a.receiver >> (8 * i));
    for (int i = 0; i < 8; i++) m[8 + i] = (uint8_t)(a.counter >> (8 * i));
    if (seal_in_place(a.c, a.key, a.counter, m + HEADER_LEN, padded) != 0) return int_value(env, -1);
    return int_value(env, (int32_t)(HEADER_LEN + padded + TAG_LEN));
}

static napi_value open_ (napi_env env, napi_callback_info info)
{
    call a;
    uint8_t nonce[NONCE_LEN], tag[TAG_LEN];
    int n;
    if (read_call(env, info, 5, &a) != 0 || a.length < TAG_LEN || !fits(&a, a.length)) return int_value(env, -1);
    uint8_t *data = a.buf + a.offset;
    uint32_t plain = a.length - TAG_LEN;
    memcpy(tag, data + plain, TAG_LEN);
    make_nonce(nonce, a.counter);
    const uint8_t *key = key_for(a.c->dec_key, &a.c->dec_keyed, a.key);
    if (EVP_DecryptInit_ex(a.c->dec, NULL, NULL, key, nonce) != 1 ||
        EVP_CIPHER_CTX_ctrl(a.c->dec, EVP_CTRL_AEAD_SET_TAG, TAG_LEN, tag) != 1) {
        a.c->dec_keyed = 0;
        memset(data, 0, plain);
        return int_value(env, -1);
    }
    if (EVP_DecryptUpdate(a.c->dec, data, &n, data, (int)plain) != 1 ||
        EVP_DecryptFinal_ex(a.c->dec, data + plain, &n) != 1) {
        memset(data, 0, plain);
        return int_value(env, -1);
    }
    return int_value(env, (int32_t)plain);
}

static int export_function (napi_env env, napi_value exports, const char *name, napi_callback cb)
{
    napi_value fn;
    return napi_create_function(env, name, NAPI_AUTO_LENGTH, cb, NULL, &fn) == napi_ok &&
        napi_set_named_property(env, exports, name, fn) == napi_ok ? 0 : -1;
}

NAPI_MODULE_INIT ()
{
    contexts *c = calloc(1, sizeof *c);
    const EVP_CIPHER *cipher = EVP_chacha20_poly1305();
    if (c == NULL || cipher == NULL) {
        free(c);
        napi_throw_error(env, NULL, "ChaCha20-Poly1305 is not available in this OpenSSL");
        return NULL;
    }
    c->enc = EVP_CIPHER_CTX_new();
    c->dec = EVP_CIPHER_CTX_new();
    if (c->enc == NULL || c->dec == NULL ||
        EVP_EncryptInit_ex(c->enc, cipher, NULL, NULL, NULL) != 1 ||
        EVP_DecryptInit_ex(c->dec, cipher, NULL, NULL, NULL) != 1 ||
        napi_set_instance_data(env, c, free_contexts, NULL) != napi_ok) {
        free_contexts(env, c, NULL);
        napi_throw_error(env, NULL, "could not set up ChaCha20-Poly1305 contexts");
        return NULL;
    }
    if (export_function(env, exports, "seal", seal) != 0 || export_function(env, exports, "open", open_) != 0 ||
        export_function(env, exports, "sealMessage", seal_message) != 0) {
        napi_throw_error(env, NULL, "could not export the transport functions");
        return NULL;
    }
    return exports;
}
