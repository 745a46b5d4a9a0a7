/* json: syntax check (see json.h). An explicit stack of open containers, no recursion. */
#include "base/json.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    const char *s;
    size_t n, i;
} P;

static void ws(P *p) {
    while (p->i < p->n &&
           (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' || p->s[p->i] == '\r'))
        p->i++;
}

static int hex(char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* A string at p->i (the opening quote): escapes checked, control characters refused, UTF-8
 * checked (no overlongs, no surrogates, nothing above U+10FFFF). */
static int string(P *p) {
    p->i++;
    while (p->i < p->n) {
        /* the common run of plain bytes, in a tight loop: most of a backup's bytes */
        const unsigned char *s = (const unsigned char *)p->s;
        size_t i = p->i;
        while (i < p->n && s[i] >= 0x20 && s[i] < 0x80 && s[i] != '"' && s[i] != '\\')
            i++;
        p->i = i;
        if (i == p->n)
            break;
        unsigned char c = s[i];
        if (c == '"') {
            p->i++;
            return 1;
        }
        if (c < 0x20)
            return 0;
        if (c == '\\') {
            if (++p->i >= p->n)
                return 0;
            char e = p->s[p->i];
            if (e == 'u') {
                if (p->i + 4 >= p->n || !hex(p->s[p->i + 1]) || !hex(p->s[p->i + 2]) ||
                    !hex(p->s[p->i + 3]) || !hex(p->s[p->i + 4]))
                    return 0;
                p->i += 5;
            } else if (e && strchr("\"\\/bfnrt", e)) {
                p->i++;
            } else {
                return 0;
            }
            continue;
        }
        if (c < 0x80) {
            p->i++;
            continue;
        }
        int len = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 ? 2 : 0;
        if (len == 0 || c > 0xf4 || p->i + (size_t)len > p->n)
            return 0;
        unsigned char c1 = (unsigned char)p->s[p->i + 1];
        if ((c1 & 0xc0) != 0x80 || (c == 0xe0 && c1 < 0xa0) || (c == 0xed && c1 > 0x9f) ||
            (c == 0xf0 && c1 < 0x90) || (c == 0xf4 && c1 > 0x8f))
            return 0;
        for (int k = 2; k < len; k++)
            if (((unsigned char)p->s[p->i + (size_t)k] & 0xc0) != 0x80)
                return 0;
        p->i += (size_t)len;
    }
    return 0;
}

static int digits(P *p) {
    size_t start = p->i;
    while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9')
        p->i++;
    return p->i > start;
}

static int number(P *p) {
    if (p->s[p->i] == '-')
        p->i++;
    if (p->i < p->n && p->s[p->i] == '0')
        p->i++;
    else if (!digits(p))
        return 0;
    if (p->i < p->n && p->s[p->i] == '.') {
        p->i++;
        if (!digits(p))
            return 0;
    }
    if (p->i < p->n && (p->s[p->i] == 'e' || p->s[p->i] == 'E')) {
        p->i++;
        if (p->i < p->n && (p->s[p->i] == '+' || p->s[p->i] == '-'))
            p->i++;
        if (!digits(p))
            return 0;
    }
    return 1;
}

static int word(P *p, const char *w) {
    size_t k = strlen(w);
    if (p->n - p->i < k || memcmp(p->s + p->i, w, k) != 0)
        return 0;
    p->i += k;
    return 1;
}

int json_valid(const char *s, size_t len, size_t *at) {
    P p = {s, len, 0};
    char stack[JSON_MAX_DEPTH]; /* '{' or '[' */
    int depth = 0;
    int ok = 0;
    for (;;) {
        /* a value */
        ws(&p);
        if (p.i >= p.n)
            goto out;
        char c = s[p.i];
        if (c == '{' || c == '[') {
            if (depth == JSON_MAX_DEPTH)
                goto out;
            stack[depth++] = c;
            p.i++;
            ws(&p);
            if (p.i < p.n && s[p.i] == (c == '{' ? '}' : ']')) {
                p.i++;
                depth--;
                goto after_value;
            }
            if (c == '{')
                goto key;
            continue;
        }
        if (c == '"') {
            if (!string(&p))
                goto out;
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            if (!number(&p))
                goto out;
        } else if (!word(&p, "true") && !word(&p, "false") && !word(&p, "null")) {
            goto out;
        }
    after_value:
        for (;;) {
            ws(&p);
            if (depth == 0) {
                ok = p.i == p.n;
                goto out;
            }
            if (p.i >= p.n)
                goto out;
            char top = stack[depth - 1];
            if (s[p.i] == ',') {
                p.i++;
                if (top == '{')
                    goto key;
                break; /* next array element */
            }
            if (s[p.i] != (top == '{' ? '}' : ']'))
                goto out;
            p.i++;
            depth--;
        }
        continue;
    key:
        ws(&p);
        if (p.i >= p.n || s[p.i] != '"' || !string(&p))
            goto out;
        ws(&p);
        if (p.i >= p.n || s[p.i] != ':')
            goto out;
        p.i++;
    }
out:
    if (at)
        *at = p.i;
    return ok;
}

int json_field(const char *json, size_t len, const char *name, char *out, size_t outsz) {
    char pat[80];
    int k = snprintf(pat, sizeof(pat), "\"%s\":", name);
    const char *end = json + len;
    for (const char *p = json; p + k <= end; p++) {
        if (memcmp(p, pat, (size_t)k) != 0)
            continue;
        const char *v = p + k;
        const char *e;
        while (v < end && (*v == ' ' || *v == '\t' || *v == '\n' || *v == '\r'))
            v++; /* "name": "value", as other writers space it */
        if (v < end && *v == '"') {
            v++;
            for (e = v; e < end && *e != '"'; e++)
                if (*e == '\\' && e + 1 < end)
                    e++;
            if (e >= end)
                return -1;
        } else if (end - v >= 4 && memcmp(v, "null", 4) == 0) {
            e = v;
        } else if (v < end && *v == '[') { /* a flat array (of names): its raw text */
            e = memchr(v, ']', (size_t)(end - v));
            if (e == NULL)
                return -1;
            e++;
        } else {
            for (e = v; e < end && ((*e >= '0' && *e <= '9') || *e == '-' || *e == '.'); e++)
                ;
        }
        if ((size_t)(e - v) >= outsz)
            return -1;
        memcpy(out, v, (size_t)(e - v));
        out[e - v] = 0;
        return 0;
    }
    return -1;
}
