/* pgsnap: pg_snapshot text and visibility (see pgsnap.h). */
#include "pg/pgsnap.h"

#include "base/buf.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static int num(const char **p, char end, uint64_t *out) {
    char *e;
    if (**p < '0' || **p > '9')
        return -1;
    errno = 0;
    unsigned long long v = strtoull(*p, &e, 10);
    if (errno || (*e != end && !(end == ',' && *e == '\0')))
        return -1;
    *out = v;
    *p = e;
    return 0;
}

int pgsnap_parse(const char *text, PgSnap *s, Err *err) {
    memset(s, 0, sizeof(*s));
    const char *p = text;
    size_t cap = 0;
    if (num(&p, ':', &s->xmin) != 0 || *p++ != ':' || num(&p, ':', &s->xmax) != 0 || *p++ != ':' ||
        s->xmin > s->xmax)
        goto bad;
    while (*p) {
        uint64_t x;
        if (num(&p, ',', &x) != 0 || x < s->xmin || x >= s->xmax ||
            (s->nxip && x <= s->xip[s->nxip - 1]))
            goto bad;
        if (s->nxip == cap) {
            cap = cap ? cap * 2 : 8;
            s->xip = xrealloc(s->xip, cap * sizeof(*s->xip));
        }
        s->xip[s->nxip++] = x;
        if (*p == ',' && *++p == '\0')
            goto bad;
    }
    return 0;
bad:
    pgsnap_free(s);
    err_set(err, ERR_PERMANENT, ERR_CODE_INVALID, "'%.60s' is no pg_snapshot", text);
    return -1;
}

void pgsnap_free(PgSnap *s) {
    free(s->xip);
    memset(s, 0, sizeof(*s));
}

uint64_t pgsnap_widen(const PgSnap *s, uint32_t xid) {
    int32_t d = (int32_t)(xid - (uint32_t)s->xmax);
    if (d < 0 && (uint64_t)(-(int64_t)d) > s->xmax)
        return xid; /* before the first epoch's xmax: nothing older exists */
    return (uint64_t)((int64_t)s->xmax + d);
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int pgsnap_visible(const PgSnap *s, uint64_t xid) {
    if (xid < s->xmin)
        return 1;
    if (xid >= s->xmax)
        return 0;
    return bsearch(&xid, s->xip, s->nxip, sizeof(xid), cmp_u64) == NULL;
}

int pgsnap_xids_any(const char *xids, int (*fn)(uint32_t xid, const void *data), const void *data) {
    for (const char *p = xids; *p;) {
        char *e;
        unsigned long x = strtoul(p, &e, 10);
        if (e == p || fn((uint32_t)x, data))
            return 1;
        p = *e == ',' ? e + 1 : e;
    }
    return 0;
}
