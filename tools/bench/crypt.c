/*
 * bench-crypt: the aes-256-gcm codec alone, in memory, at several chunk sizes:
 * encrypt and decrypt MiB/s and the bytes it adds, next to gzip -1 and zstd -1 of
 * the same input for scale. Prints figures; asserts nothing but the round trip.
 *
 *   build/bench-crypt [MiB]      (default 256 MiB of row-like JSON)
 */
#include "io/crypt.h"
#include "io/filter.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Rows that look like ours: keys repeated, ids and numbers random. */
static char *rows(size_t n) {
    char *p = malloc(n);
    uint64_t x = 88172645463325252ull;
    size_t at = 0;
    while (at < n) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        char row[256];
        int k = snprintf(row, sizeof(row),
                         "{\"id\":\"%08llx-%04llx-4000-8000-%012llx\",\"number\":%llu,\"status\":"
                         "\"pending\",\"total\":%llu.%02llu,\"notes\":null},\n",
                         (unsigned long long)(x >> 32), (unsigned long long)(x & 0xffff),
                         (unsigned long long)(x >> 16), (unsigned long long)(x % 100000),
                         (unsigned long long)(x % 10000), (unsigned long long)(x % 100));
        size_t take = (size_t)k < n - at ? (size_t)k : n - at;
        memcpy(p + at, row, take);
        at += take;
    }
    return p;
}

/* Through f in 1 MiB pieces (as the write stream hands them); seconds, output in out. */
static double run(Filter *f, const char *in, size_t n, Buf *out) {
    FilterChain *c = filter_chain_new();
    filter_chain_add(c, f);
    Err e;
    double t = now();
    for (size_t at = 0; at < n; at += 1 << 20)
        if (filter_chain_write(c, in + at, n - at < (1u << 20) ? n - at : 1u << 20, out, &e)) {
            fprintf(stderr, "bench-crypt: %s\n", e.msg);
            exit(1);
        }
    if (filter_chain_finish(c, out, &e)) {
        fprintf(stderr, "bench-crypt: %s\n", e.msg);
        exit(1);
    }
    t = now() - t;
    filter_chain_free(c);
    return t;
}

int main(int argc, char **argv) {
    size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 256, n = mib << 20;
    char *in = rows(n);
    printf("%zu MiB of row JSON, in 1 MiB pieces\n", mib);
    Buf out = BUF_INIT;
    double t = run(filter_gzip_new(NULL, 1), in, n, &out);
    printf("%-26s %8.0f MiB/s  -> %.1f MiB\n", "gzip -1", mib / t, out.len / 1048576.0);
    buf_reset(&out);
    t = run(filter_zstd_new(NULL, 1), in, n, &out);
    printf("%-26s %8.0f MiB/s  -> %.1f MiB\n", "zstd -1", mib / t, out.len / 1048576.0);
    /* the first run pays the page faults of its output: a warm-up run first */
    size_t sizes[] = {64 << 10, 64 << 10, 256 << 10, 1 << 20};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        CryptParams p = {.user_id = "70b50001-0000-4000-8000-000000000001",
                         .backup_id = "backup-70b50001-0000-4000-8000-000000000001-1",
                         .codecs_json = "[\"aes-256-gcm\"]",
                         .key_id = "k1",
                         .wrapped_key = "x",
                         .have_dek = 1,
                         .chunk_size = sizes[i]};
        Buf sealed = BUF_INIT, back = BUF_INIT;
        double te = run(crypt_encrypt_new(NULL, &p), in, n, &sealed);
        double td = run(crypt_decrypt_new(NULL, &p), sealed.data, sealed.len, &back);
        if (back.len != n || memcmp(back.data, in, n) != 0) {
            fprintf(stderr, "bench-crypt: the round trip differs\n");
            return 1;
        }
        if (i == 0) { /* the warm-up */
            buf_free(&sealed);
            buf_free(&back);
            continue;
        }
        char name[64];
        snprintf(name, sizeof(name), "aes-256-gcm, %zu KiB chunks", sizes[i] >> 10);
        printf("%-26s %8.0f MiB/s encrypt, %6.0f MiB/s decrypt, +%zu bytes\n", name, mib / te,
               mib / td, sealed.len - n);
        buf_free(&sealed);
        buf_free(&back);
    }
    buf_free(&out);
    free(in);
    return 0;
}
