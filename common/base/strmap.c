/* strmap: strings to pointers (strmap.h). */
#include "base/strmap.h"

#include "base/buf.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *key; /* NULL: empty */
    void *value;
    uint64_t hash;
} Slot;

struct StrMap {
    Slot *slots;
    size_t cap; /* a power of two */
    size_t count;
};

static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h ^ (h >> 29);
}

StrMap *strmap_new(void) {
    StrMap *m = xcalloc(1, sizeof(*m));
    m->cap = 16;
    m->slots = xcalloc(m->cap, sizeof(Slot));
    return m;
}

void strmap_free(StrMap *m, void (*free_value)(void *)) {
    if (m == NULL)
        return;
    for (size_t i = 0; i < m->cap; i++)
        if (m->slots[i].key) {
            if (free_value)
                free_value(m->slots[i].value);
            free(m->slots[i].key);
        }
    free(m->slots);
    free(m);
}

static size_t find(const StrMap *m, const char *key, uint64_t h) {
    size_t i = h & (m->cap - 1);
    while (m->slots[i].key && (m->slots[i].hash != h || strcmp(m->slots[i].key, key) != 0))
        i = (i + 1) & (m->cap - 1);
    return i;
}

void *strmap_get(const StrMap *m, const char *key) {
    size_t i = find(m, key, hash_str(key));
    return m->slots[i].key ? m->slots[i].value : NULL;
}

static void grow(StrMap *m) {
    Slot *old = m->slots;
    size_t oldcap = m->cap;
    m->cap *= 2;
    m->slots = xcalloc(m->cap, sizeof(Slot));
    for (size_t i = 0; i < oldcap; i++)
        if (old[i].key)
            m->slots[find(m, old[i].key, old[i].hash)] = old[i];
    free(old);
}

void *strmap_put(StrMap *m, const char *key, void *value) {
    if ((m->count + 1) * 4 > m->cap * 3)
        grow(m);
    uint64_t h = hash_str(key);
    size_t i = find(m, key, h);
    if (m->slots[i].key) {
        void *prev = m->slots[i].value;
        m->slots[i].value = value;
        return prev;
    }
    m->slots[i] = (Slot){xstrdup(key), value, h};
    m->count++;
    return NULL;
}

void *strmap_del(StrMap *m, const char *key) {
    size_t i = find(m, key, hash_str(key));
    if (m->slots[i].key == NULL)
        return NULL;
    void *value = m->slots[i].value;
    free(m->slots[i].key);
    m->slots[i].key = NULL;
    m->count--;
    /* shift back the entries of the run after i that may sit at i */
    size_t j = i;
    for (;;) {
        j = (j + 1) & (m->cap - 1);
        if (m->slots[j].key == NULL)
            break;
        size_t home = m->slots[j].hash & (m->cap - 1);
        /* j's entry may move to i when its home is not in (i, j] (cyclically) */
        int in_range = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!in_range) {
            m->slots[i] = m->slots[j];
            m->slots[j].key = NULL;
            i = j;
        }
    }
    return value;
}

size_t strmap_count(const StrMap *m) {
    return m->count;
}

int strmap_next(const StrMap *m, size_t *pos, const char **key, void **value) {
    while (*pos < m->cap) {
        Slot *s = &m->slots[(*pos)++];
        if (s->key) {
            *key = s->key;
            *value = s->value;
            return 1;
        }
    }
    return 0;
}
