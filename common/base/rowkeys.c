/* rowkeys: see rowkeys.h. Linear probing; an all-zero slot is empty, so the zero key (the nil
 * uuid) is kept aside. */
#include "base/rowkeys.h"

#include "base/buf.h" /* xcalloc */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct RowKeys {
    unsigned char *slots; /* cap * ROWKEYS_KEY_LEN */
    size_t cap, n;        /* cap: a power of two */
    int has_zero;
};

static const unsigned char zero[ROWKEYS_KEY_LEN];

RowKeys *rowkeys_new(void) {
    RowKeys *s = xcalloc(1, sizeof(*s));
    s->cap = 64;
    s->slots = xcalloc(s->cap, ROWKEYS_KEY_LEN);
    return s;
}

void rowkeys_free(RowKeys *s) {
    if (s == NULL)
        return;
    free(s->slots);
    free(s);
}

size_t rowkeys_count(const RowKeys *s) {
    return s->n + (size_t)s->has_zero;
}

/* splitmix64's finalizer over both halves: integers are not spread, uuids mostly are */
static uint64_t mix(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static size_t slot_of(const RowKeys *s, const unsigned char *k) {
    uint64_t a, b;
    memcpy(&a, k, 8);
    memcpy(&b, k + 8, 8);
    size_t i = (size_t)mix(a ^ mix(b)) & (s->cap - 1);
    while (memcmp(s->slots + i * ROWKEYS_KEY_LEN, zero, ROWKEYS_KEY_LEN) != 0 &&
           memcmp(s->slots + i * ROWKEYS_KEY_LEN, k, ROWKEYS_KEY_LEN) != 0)
        i = (i + 1) & (s->cap - 1);
    return i;
}

static void grow(RowKeys *s) {
    unsigned char *old = s->slots;
    size_t oldcap = s->cap;
    s->cap *= 2;
    s->slots = xcalloc(s->cap, ROWKEYS_KEY_LEN);
    for (size_t i = 0; i < oldcap; i++) {
        const unsigned char *k = old + i * ROWKEYS_KEY_LEN;
        if (memcmp(k, zero, ROWKEYS_KEY_LEN) != 0)
            memcpy(s->slots + slot_of(s, k) * ROWKEYS_KEY_LEN, k, ROWKEYS_KEY_LEN);
    }
    free(old);
}

int rowkeys_add(RowKeys *s, const unsigned char k[ROWKEYS_KEY_LEN]) {
    if (memcmp(k, zero, ROWKEYS_KEY_LEN) == 0) {
        int added = !s->has_zero;
        s->has_zero = 1;
        return added;
    }
    if ((s->n + 1) * 2 > s->cap)
        grow(s);
    unsigned char *slot = s->slots + slot_of(s, k) * ROWKEYS_KEY_LEN;
    if (memcmp(slot, k, ROWKEYS_KEY_LEN) == 0)
        return 0;
    memcpy(slot, k, ROWKEYS_KEY_LEN);
    s->n++;
    return 1;
}

int rowkeys_has(const RowKeys *s, const unsigned char k[ROWKEYS_KEY_LEN]) {
    if (memcmp(k, zero, ROWKEYS_KEY_LEN) == 0)
        return s->has_zero;
    return memcmp(s->slots + slot_of(s, k) * ROWKEYS_KEY_LEN, k, ROWKEYS_KEY_LEN) == 0;
}

/* hex digit values + 1 (0: not a digit) */
static const unsigned char hexv[256] = {
    ['0'] = 1,  ['1'] = 2,  ['2'] = 3,  ['3'] = 4,  ['4'] = 5,  ['5'] = 6,  ['6'] = 7,  ['7'] = 8,
    ['8'] = 9,  ['9'] = 10, ['a'] = 11, ['b'] = 12, ['c'] = 13, ['d'] = 14, ['e'] = 15, ['f'] = 16,
    ['A'] = 11, ['B'] = 12, ['C'] = 13, ['D'] = 14, ['E'] = 15, ['F'] = 16};

static int uuid_key(const char *s, size_t n, unsigned char *out) {
    int digits = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '-' || s[i] == '{' || s[i] == '}')
            continue;
        int v = hexv[(unsigned char)s[i]] - 1;
        if (v < 0 || digits == 32)
            return -1;
        if (digits % 2 == 0)
            out[digits / 2] = (unsigned char)(v << 4);
        else
            out[digits / 2] |= (unsigned char)v;
        digits++;
    }
    return digits == 32 ? 0 : -1;
}

static int int_key(const char *s, size_t n, unsigned char *out) {
    size_t i = 0;
    int neg = 0;
    if (i < n && (s[i] == '-' || s[i] == '+'))
        neg = s[i++] == '-';
    if (i == n || n - i > 19)
        return -1;
    uint64_t v = 0;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (v > (uint64_t)INT64_MAX + (uint64_t)neg)
        return -1;
    /* two's complement of the value, then a marker byte: never the zero key, never a uuid's
     * concern (one set holds one kind) */
    uint64_t w = neg ? (uint64_t)0 - v : v;
    memset(out, 0, ROWKEYS_KEY_LEN);
    memcpy(out, &w, 8);
    out[8] = 1;
    return 0;
}

int rowkeys_key(char kind, const char *s, size_t n, unsigned char out[ROWKEYS_KEY_LEN]) {
    if (n >= 2 && s[0] == '"' && s[n - 1] == '"') {
        s++;
        n -= 2;
        if (memchr(s, '\\', n) != NULL)
            return -1;
    }
    if (kind == 'u')
        return uuid_key(s, n, out);
    if (kind == 'i')
        return int_key(s, n, out);
    return -1;
}

unsigned long long rowkeys_digest(char kind, const unsigned char k[ROWKEYS_KEY_LEN]) {
    if (kind == 'i') {
        uint64_t w;
        memcpy(&w, k, 8);
        return w;
    }
    uint32_t top = (uint32_t)k[0] << 24 | (uint32_t)k[1] << 16 | (uint32_t)k[2] << 8 | k[3];
    return (uint64_t)(int64_t)(int32_t)top;
}
