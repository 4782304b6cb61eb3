/*
 * Reference ceiling for bench/crypto.ts: ChaCha20-Poly1305 (RFC 8439) seal + open of one padded
 * 1420-byte WireGuard packet (1424 bytes) through OpenSSL's EVP interface, from C with no JavaScript
 * in the loop. One context per direction, re-keyed and re-nonced per packet as a data path must.
 * Usage: openssl-aead ROUNDS MS; prints {"cpu":best,"median":m,"wall":best} in packets per second.
 * Build: cc -O2 -o openssl-aead openssl-aead.c -lcrypto
 */
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PACKET 1424
#define TAG 16

static double seconds (clockid_t clock)
{
    struct timespec t;
    clock_gettime(clock, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int cmp (const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main (int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 5;
    double budget = (argc > 2 ? atof(argv[2]) : 1000) / 1000;
    if (rounds < 1 || rounds > 50 || budget <= 0 || budget > 10) {
        fprintf(stderr, "usage: openssl-aead ROUNDS(1-50) MS(1-10000)\n");
        return 2;
    }
    EVP_CIPHER_CTX *enc = EVP_CIPHER_CTX_new(), *dec = EVP_CIPHER_CTX_new();
    const EVP_CIPHER *cipher = EVP_chacha20_poly1305();
    if (enc == NULL || dec == NULL || EVP_EncryptInit_ex(enc, cipher, NULL, NULL, NULL) != 1 ||
        EVP_DecryptInit_ex(dec, cipher, NULL, NULL, NULL) != 1) {
        fprintf(stderr, "openssl-aead: no ChaCha20-Poly1305 in this OpenSSL\n");
        return 1;
    }
    unsigned char key[32], nonce[12] = { 0 }, buf[PACKET + TAG];
    memset(key, 7, sizeof key);
    double rates[50], wall = 0;
    unsigned long long counter = 0;
    for (int r = 0; r < rounds; r++) {
        double c0 = seconds(CLOCK_PROCESS_CPUTIME_ID), w0 = seconds(CLOCK_MONOTONIC);
        long done = 0;
        while (seconds(CLOCK_MONOTONIC) - w0 < budget) {
            for (int i = 0; i < 1000; i++, done++, counter++) {
                int len;
                memset(buf, 0x45, PACKET);
                memcpy(nonce + 4, &counter, 8); /* little-endian counter after 4 zero bytes */
                if (EVP_EncryptInit_ex(enc, NULL, NULL, key, nonce) != 1 ||
                    EVP_EncryptUpdate(enc, buf, &len, buf, PACKET) != 1 ||
                    EVP_EncryptFinal_ex(enc, buf + PACKET, &len) != 1 ||
                    EVP_CIPHER_CTX_ctrl(enc, EVP_CTRL_AEAD_GET_TAG, TAG, buf + PACKET) != 1 ||
                    EVP_DecryptInit_ex(dec, NULL, NULL, key, nonce) != 1 ||
                    EVP_CIPHER_CTX_ctrl(dec, EVP_CTRL_AEAD_SET_TAG, TAG, buf + PACKET) != 1 ||
                    EVP_DecryptUpdate(dec, buf, &len, buf, PACKET) != 1 ||
                    EVP_DecryptFinal_ex(dec, buf + PACKET, &len) != 1 || buf[PACKET - 1] != 0x45) {
                    fprintf(stderr, "openssl-aead: round trip failed\n");
                    return 1;
                }
            }
        }
        double cpu = seconds(CLOCK_PROCESS_CPUTIME_ID) - c0, w = seconds(CLOCK_MONOTONIC) - w0;
        rates[r] = done / cpu;
        if (done / w > wall) wall = done / w;
    }
    qsort(rates, rounds, sizeof rates[0], cmp);
    printf("{\"cpu\":%.0f,\"median\":%.0f,\"wall\":%.0f}\n", rates[rounds - 1], rates[rounds / 2], wall);
    EVP_CIPHER_CTX_free(enc);
    EVP_CIPHER_CTX_free(dec);
    return 0;
}
