/*
 * jobspec: strict decoding of job entries (see jobspec.h).
 *
 * Both encodings are reduced to one list of JobField and checked by one code
 * path, so flat and msgpack jobs cannot disagree on what is valid.
 */
#include "jobs/jobspec.h"
#include "base/buf.h"
#include "jobs/jobs.h"

#include <ctype.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FIELDS 32

/* A short, printable excerpt of a value for error messages. */
static void excerpt(char *out, size_t outlen, const char *s, size_t len) {
    size_t o = 0;
    for (size_t i = 0; i < len && o + 5 < outlen; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f && c != '\'' && c != '\\') {
            out[o++] = (char)c;
        } else {
            o += (size_t)snprintf(out + o, outlen - o, "\\x%02x", c);
        }
        if (i == 40 && len > 44) {
            o += (size_t)snprintf(out + o, outlen - o, "...(%zu bytes)", len);
            break;
        }
    }
    out[o < outlen ? o : outlen - 1] = '\0';
}

int jobspec_refuse(Err *err, const char *fmt, ...) {
    char msg[ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    err_set(err, ERR_PERMANENT, ERR_CODE_INVALID, "%s", msg);
    return -1;
}
#define fail jobspec_refuse

int jobspec_need_user(const JobSpec *spec, Err *err) {
    if (spec->user_id[0] != '\0')
        return 0;
    return fail(err,
                "missing field 'user_id' (the UUID of the user whose data this %s job concerns)",
                spec->type);
}

/* "ping, backup, ... or replicate": the types an entry may name, for the refusals below */
static void type_names(char *out, size_t outlen, int allow_test_types) {
    size_t n, len = 0, shown = 0, total = 0;
    const JobType *const *t = job_types(&n);
    for (size_t i = 0; i < n; i++)
        total += !t[i]->test_only || allow_test_types;
    out[0] = '\0';
    for (size_t i = 0; i < n && len < outlen; i++) {
        if (t[i]->test_only && !allow_test_types)
            continue;
        shown++;
        len += (size_t)snprintf(out + len, outlen - len, "%s%s",
                                shown == 1       ? ""
                                : shown == total ? " or "
                                                 : ", ",
                                t[i]->name);
    }
}

static int bad_value(Err *err, const JobField *f, const char *why) {
    char name[64], val[200];
    excerpt(name, sizeof(name), f->name, f->name_len);
    excerpt(val, sizeof(val), f->value, f->value_len);
    return fail(err, "field '%s': '%s' %s", name, val, why);
}

int jobspec_valid_uuid(const char *s, size_t len) {
    if (len != 36)
        return 0;
    for (size_t i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return 0;
        } else if (!isxdigit((unsigned char)s[i])) {
            return 0;
        }
    }
    return 1;
}

int jobspec_valid_backup_id(const char *s, size_t len) {
    static const char *kinds[] = {"backup-", "incremental-", "differential-"};
    if (len > JOBSPEC_ID_MAX)
        return 0;
    for (size_t k = 0; k < 3; k++) {
        size_t kl = strlen(kinds[k]);
        if (len < kl + 38 || memcmp(s, kinds[k], kl) != 0)
            continue;
        if (!jobspec_valid_uuid(s + kl, 36) || s[kl + 36] != '-')
            return 0;
        for (size_t i = kl + 37; i < len; i++)
            if (!isalnum((unsigned char)s[i]))
                return 0;
        return 1;
    }
    return 0;
}

static int valid_job_id(const char *s, size_t len) {
    if (len == 0 || len > JOBSPEC_ID_MAX)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!isalnum((unsigned char)s[i]) && (s[i] == '\0' || !strchr("_.:-", s[i])))
            return 0; /* strchr finds the terminator: a NUL would pass as one of the set */
    return 1;
}

static int valid_ident(const char *s, size_t len) {
    if (len == 0 || len > 63 || !(islower((unsigned char)s[0]) || s[0] == '_'))
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!islower((unsigned char)s[i]) && !isdigit((unsigned char)s[i]) && s[i] != '_')
            return 0;
    return 1;
}

static int is(const JobField *f, const char *name) {
    return f->name_len == strlen(name) && memcmp(f->name, name, f->name_len) == 0;
}

static int value_is(const JobField *f, const char *v) {
    return f->value_len == strlen(v) && memcmp(f->value, v, f->value_len) == 0;
}

static void copy_value(char *dst, size_t cap, const JobField *f) {
    size_t n = f->value_len < cap - 1 ? f->value_len : cap - 1;
    memcpy(dst, f->value, n);
    dst[n] = '\0';
}

static int parse_long(const JobField *f, long min, long max, long *out) {
    if (f->value_len == 0 || f->value_len > 12)
        return -1;
    long v = 0;
    for (size_t i = 0; i < f->value_len; i++) {
        if (!isdigit((unsigned char)f->value[i]))
            return -1;
        v = v * 10 + (f->value[i] - '0');
    }
    if (v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

static int uuid_field(char out[37], const JobField *f, Err *err) {
    if (!jobspec_valid_uuid(f->value, f->value_len))
        return bad_value(err, f, "is not a UUID");
    for (size_t i = 0; i < 36; i++)
        out[i] = (char)tolower((unsigned char)f->value[i]);
    out[36] = '\0';
    return 0;
}

static int tables_field(JobSpec *spec, const JobField *f, Err *err) {
    size_t start = 0;
    for (size_t i = 0; i <= f->value_len; i++) {
        if (i < f->value_len && f->value[i] != ',')
            continue;
        const char *name = f->value + start;
        size_t n = i - start;
        start = i + 1;
        if (!valid_ident(name, n))
            return bad_value(err, f, "must be table names separated by commas (a-z, 0-9, _)");
        if (spec->ntables == JOBSPEC_TABLES_MAX)
            return bad_value(err, f, "lists too many tables");
        for (int t = 0; t < spec->ntables; t++)
            if (strlen(spec->tables[t]) == n && memcmp(spec->tables[t], name, n) == 0)
                return bad_value(err, f, "names a table twice");
        memcpy(spec->tables[spec->ntables], name, n);
        spec->tables[spec->ntables++][n] = '\0';
    }
    return 0;
}

static int takes(const JobType *t, const JobField *f) {
    static const char *common[] = {"type", "job_id", "requested_by", "trigger"};
    for (size_t i = 0; i < 4; i++)
        if (is(f, common[i]))
            return 1;
    const char *p = t->fields;
    while (*p) {
        size_t n = strcspn(p, " ");
        if (n == f->name_len && memcmp(p, f->name, n) == 0)
            return 1;
        p += n;
        while (*p == ' ')
            p++;
    }
    return 0;
}

static int decode_fields(JobSpec *spec, const JobField *fields, size_t n, const char *entry_id,
                         int allow_test_types, Err *err) {
    const JobField *type = NULL;
    for (size_t i = 0; i < n; i++) {
        if (fields[i].name_len == 0)
            return fail(err, "empty field name");
        for (size_t j = 0; j < i; j++)
            if (fields[j].name_len == fields[i].name_len &&
                memcmp(fields[j].name, fields[i].name, fields[i].name_len) == 0) {
                char name[64];
                excerpt(name, sizeof(name), fields[i].name, fields[i].name_len);
                return fail(err, "field '%s' given twice", name);
            }
        if (is(&fields[i], "type"))
            type = &fields[i];
        /* known early, so even a job rejected below reports under its own id */
        if (is(&fields[i], "job_id") && valid_job_id(fields[i].value, fields[i].value_len))
            copy_value(spec->job_id, sizeof(spec->job_id), &fields[i]);
    }
    char names[200], why[240];
    type_names(names, sizeof(names), allow_test_types);
    if (type == NULL)
        return fail(err, "missing field 'type' (%s)", names);
    size_t ntypes;
    const JobType *const *types = job_types(&ntypes);
    const JobType *tf = NULL;
    for (size_t t = 0; t < ntypes; t++)
        if (value_is(type, types[t]->name) && (!types[t]->test_only || allow_test_types))
            tf = types[t];
    if (tf == NULL) {
        snprintf(why, sizeof(why), "is not a job type (%s)", names);
        return bad_value(err, type, why);
    }
    snprintf(spec->type, sizeof(spec->type), "%s", tf->name);
    snprintf(spec->trigger, sizeof(spec->trigger), "api");
    spec->fail_permanent = -1;

    for (size_t i = 0; i < n; i++) {
        const JobField *f = &fields[i];
        if (!takes(tf, f)) {
            char name[64];
            excerpt(name, sizeof(name), f->name, f->name_len);
            return fail(err, "field '%s' is not part of a %s job", name, tf->name);
        }
        long v;
        if (f == type) {
            continue;
        } else if (is(f, "job_id")) {
            if (!valid_job_id(f->value, f->value_len))
                return bad_value(err, f, "must be 1-128 letters, digits or _.:-");
            copy_value(spec->job_id, sizeof(spec->job_id), f);
        } else if (is(f, "user_id")) {
            if (uuid_field(spec->user_id, f, err) != 0)
                return -1;
        } else if (is(f, "requested_by")) {
            if (uuid_field(spec->requested_by, f, err) != 0)
                return -1;
        } else if (is(f, "trigger")) {
            if (!value_is(f, "manual") && !value_is(f, "scheduled") && !value_is(f, "api"))
                return bad_value(err, f, "is not manual, scheduled or api");
            copy_value(spec->trigger, sizeof(spec->trigger), f);
        } else if (is(f, "mode")) {
            if (!value_is(f, "full") && !value_is(f, "incremental") && !value_is(f, "differential"))
                return bad_value(err, f, "is not full, incremental or differential");
            copy_value(spec->mode, sizeof(spec->mode), f);
        } else if (is(f, "backup_id")) {
            if (!jobspec_valid_backup_id(f->value, f->value_len))
                return bad_value(
                    err, f, "is not a backup id ((backup|incremental|differential)-<uuid>-<id>)");
            copy_value(spec->backup_id, sizeof(spec->backup_id), f);
        } else if (is(f, "export_id")) {
            if (uuid_field(spec->export_id, f, err) != 0)
                return -1;
        } else if (is(f, "from")) {
            if (!value_is(f, "primary") && !value_is(f, "replica"))
                return bad_value(err, f, "is not primary or replica");
            copy_value(spec->from, sizeof(spec->from), f);
        } else if (is(f, "dry_run")) {
            if (!value_is(f, "true") && !value_is(f, "false"))
                return bad_value(err, f, "is not true or false");
            spec->dry_run = value_is(f, "true");
        } else if (is(f, "at")) {
            if (f->value_len >= sizeof(spec->at) || !jobspec_at_kind(f->value, f->value_len))
                return bad_value(err, f,
                                 "is not a time with its offset (2026-12-07T09:14:00+01:00) or "
                                 "an LSN (16/B374D848)");
            copy_value(spec->at, sizeof(spec->at), f);
        } else if (is(f, "tables")) {
            if (tables_field(spec, f, err) != 0)
                return -1;
        } else if (is(f, "retention_days")) {
            if (parse_long(f, 1, 36500, &v) != 0)
                return bad_value(err, f, "is not a number of days from 1 to 36500");
            spec->retention_days = (int)v;
        } else if (is(f, "scope")) {
            if (!value_is(f, "all") && !value_is(f, "user"))
                return bad_value(err, f, "is not all or user");
            spec->scope_all = value_is(f, "all");
        } else if (is(f, "ms")) {
            if (parse_long(f, 0, 600000, &v) != 0)
                return bad_value(err, f, "is not a number of milliseconds from 0 to 600000");
            spec->sleep_ms = v;
        } else if (is(f, "fail")) {
            if (!value_is(f, "retryable") && !value_is(f, "permanent"))
                return bad_value(err, f, "is not retryable or permanent");
            spec->fail_permanent = value_is(f, "permanent");
        } else if (is(f, "fail_attempts")) {
            if (parse_long(f, 0, 100, &v) != 0)
                return bad_value(err, f, "is not a number from 0 to 100");
            spec->fail_attempts = (int)v;
        }
    }

    if (tf->check && tf->check(spec, err) != 0)
        return -1;
    if (spec->job_id[0] == '\0')
        snprintf(spec->job_id, sizeof(spec->job_id), "%s", entry_id);
    return 0;
}

static int digits(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return 1;
}

static int num(const char *s, size_t n) {
    int v = 0;
    for (size_t i = 0; i < n; i++)
        v = v * 10 + (s[i] - '0');
    return v;
}

char jobspec_at_kind(const char *s, size_t len) {
    const char *slash = memchr(s, '/', len);
    if (slash) {
        size_t a = (size_t)(slash - s), b = len - a - 1;
        if (a == 0 || a > 8 || b == 0 || b > 8)
            return 0;
        for (size_t i = 0; i < len; i++)
            if (i != a && !isxdigit((unsigned char)s[i]))
                return 0;
        return 'l';
    }
    /* YYYY-MM-DDTHH:MM:SS[.frac]{Z|+hh:mm|-hh:mm}: the offset is required, so the point is
     * one instant whatever the server's time zone */
    if (len < 20 || !digits(s, 4) || s[4] != '-' || !digits(s + 5, 2) || s[7] != '-' ||
        !digits(s + 8, 2) || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') || !digits(s + 11, 2) ||
        s[13] != ':' || !digits(s + 14, 2) || s[16] != ':' || !digits(s + 17, 2))
        return 0;
    int mo = num(s + 5, 2), d = num(s + 8, 2);
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || num(s + 11, 2) > 23 || num(s + 14, 2) > 59 ||
        num(s + 17, 2) > 60)
        return 0;
    size_t i = 19;
    if (i < len && s[i] == '.') {
        size_t f = ++i;
        while (i < len && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == f || i - f > 9)
            return 0;
    }
    if (i + 1 == len && (s[i] == 'Z' || s[i] == 'z'))
        return 't';
    if (i + 6 == len && (s[i] == '+' || s[i] == '-') && digits(s + i + 1, 2) && s[i + 3] == ':' &&
        digits(s + i + 4, 2) && num(s + i + 1, 2) <= 23 && num(s + i + 4, 2) <= 59)
        return 't';
    return 0;
}

/* Big-endian unsigned integer of n bytes at p. */
static uint64_t be(const unsigned char *p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/*
 * msgpack-c allocates what a header declares before it reads a single element: a five-byte
 * map header claiming 4 billion entries asks for 64 GiB. Walk the headers first and refuse any
 * count or length the remaining bytes cannot hold (every element takes at least one byte), so
 * what the unpacker allocates is bounded by the entry's own size. 0 when well formed.
 */
static int mp_prescan(const unsigned char *p, size_t len, char *why, size_t whylen) {
    size_t pos = 0;
    uint64_t pending = 1; /* elements still to read */
    while (pending > 0) {
        if (pos >= len) {
            snprintf(why, whylen, "truncated at byte %zu", pos);
            return -1;
        }
        unsigned b = p[pos++];
        uint64_t items = 0, skip = 0;
        int lenbytes = 0;
        pending--;
        if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3)
            ;
        else if (b <= 0x8f)
            items = 2 * (uint64_t)(b & 0x0f);
        else if (b <= 0x9f)
            items = b & 0x0f;
        else if (b <= 0xbf)
            skip = b & 0x1f;
        else if (b == 0xc4 || b == 0xd9)
            lenbytes = 1;
        else if (b == 0xc5 || b == 0xda)
            lenbytes = 2;
        else if (b == 0xc6 || b == 0xdb)
            lenbytes = 4;
        else if (b >= 0xc7 && b <= 0xc9) { /* ext 8/16/32: length, then a type byte */
            lenbytes = b == 0xc7 ? 1 : b == 0xc8 ? 2 : 4;
            skip = 1;
        } else if (b == 0xca || b == 0xcb)
            skip = b == 0xca ? 4 : 8;
        else if (b >= 0xcc && b <= 0xd3)
            skip = 1u << ((b - 0xcc) & 3);
        else if (b >= 0xd4 && b <= 0xd8)
            skip = 1 + (1u << (b - 0xd4));
        else if (b == 0xdc || b == 0xde || b == 0xdd || b == 0xdf) {
            int n = b == 0xdc || b == 0xde ? 2 : 4;
            if (len - pos < (size_t)n) {
                snprintf(why, whylen, "truncated at byte %zu", pos);
                return -1;
            }
            items = be(p + pos, n) * (b >= 0xde ? 2 : 1);
            pos += (size_t)n;
        } else {
            snprintf(why, whylen, "byte 0x%02x at %zu is not a msgpack type", b, pos - 1);
            return -1;
        }
        if (lenbytes) {
            if (len - pos < (size_t)lenbytes) {
                snprintf(why, whylen, "truncated at byte %zu", pos);
                return -1;
            }
            skip += be(p + pos, lenbytes);
            pos += (size_t)lenbytes;
        }
        if (skip > len - pos) {
            snprintf(why, whylen, "a value at byte %zu declares %llu bytes; %zu remain", pos,
                     (unsigned long long)skip, len - pos);
            return -1;
        }
        pos += (size_t)skip;
        pending += items;
        if (pending > len - pos) {
            snprintf(why, whylen, "a container declares %llu elements; only %zu bytes remain",
                     (unsigned long long)items, len - pos);
            return -1;
        }
    }
    return 0;
}

/* Numbers in msgpack become their decimal text, so one validator serves both forms. */
static int decode_msgpack(JobSpec *spec, const JobField *mp, const char *entry_id,
                          int allow_test_types, Err *err) {
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    int rc = -1;
    char numbuf[MAX_FIELDS][24];
    JobField fields[MAX_FIELDS];
    char why[128];
    if (mp_prescan((const unsigned char *)mp->value, mp->value_len, why, sizeof(why)) != 0) {
        fail(err, "field 'msgpack': not valid msgpack (%s)", why);
        goto out;
    }
    msgpack_unpack_return ur = msgpack_unpack_next(&u, mp->value, mp->value_len, &off);
    if (ur != MSGPACK_UNPACK_SUCCESS) {
        fail(err, "field 'msgpack': not valid msgpack");
        goto out;
    }
    if (off != mp->value_len) {
        fail(err, "field 'msgpack': %zu bytes after the map", mp->value_len - off);
        goto out;
    }
    const msgpack_object *o = &u.data;
    if (o->type != MSGPACK_OBJECT_MAP) {
        fail(err, "field 'msgpack': must hold a map of field names to values");
        goto out;
    }
    if (o->via.map.size > MAX_FIELDS) {
        fail(err, "field 'msgpack': the map has %u keys (at most %d)", o->via.map.size, MAX_FIELDS);
        goto out;
    }
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object *k = &o->via.map.ptr[i].key;
        const msgpack_object *v = &o->via.map.ptr[i].val;
        if (k->type != MSGPACK_OBJECT_STR) {
            fail(err, "field 'msgpack': key %u is not a string", i + 1);
            goto out;
        }
        fields[i].name = k->via.str.ptr;
        fields[i].name_len = k->via.str.size;
        if (v->type == MSGPACK_OBJECT_STR) {
            fields[i].value = v->via.str.ptr;
            fields[i].value_len = v->via.str.size;
        } else if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
            snprintf(numbuf[i], sizeof(numbuf[i]), "%llu", (unsigned long long)v->via.u64);
            fields[i].value = numbuf[i];
            fields[i].value_len = strlen(numbuf[i]);
        } else {
            char name[64];
            excerpt(name, sizeof(name), k->via.str.ptr, k->via.str.size);
            fail(err, "field 'msgpack': the value of '%s' must be a string%s", name,
                 v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER ? " or a positive integer" : "");
            goto out;
        }
    }
    rc = decode_fields(spec, fields, o->via.map.size, entry_id, allow_test_types, err);
out:
    msgpack_unpacked_destroy(&u);
    return rc;
}

int jobspec_decode(JobSpec *spec, const JobField *fields, size_t nfields, const char *entry_id,
                   int allow_test_types, Err *err) {
    memset(spec, 0, sizeof(*spec));
    if (nfields == 0)
        return fail(err, "empty entry: no fields");
    if (nfields > MAX_FIELDS)
        return fail(err, "%zu fields (at most %d)", nfields, MAX_FIELDS);
    /* msgpack, optionally beside a flat job_id (retries are re-enqueued with one) */
    const JobField *mp = NULL, *jid = NULL;
    for (size_t i = 0; i < nfields; i++) {
        if (is(&fields[i], "msgpack"))
            mp = &fields[i];
        else if (is(&fields[i], "job_id"))
            jid = &fields[i];
    }
    if (mp != NULL) {
        if (nfields > 2 || (nfields == 2 && jid == NULL))
            return fail(err,
                        "field 'msgpack' must be the only field of the entry (besides job_id)");
        if (jid != NULL && !valid_job_id(jid->value, jid->value_len))
            return bad_value(err, jid, "must be 1-128 letters, digits or _.:-");
        if (decode_msgpack(spec, mp, entry_id, allow_test_types, err) != 0) {
            if (jid != NULL && spec->job_id[0] == '\0')
                copy_value(spec->job_id, sizeof(spec->job_id), jid);
            return -1;
        }
        if (jid != NULL) {
            /* the map's own job_id (or the entry id it defaulted to) must agree */
            int in_map = strcmp(spec->job_id, entry_id) != 0;
            if (in_map && !value_is(jid, spec->job_id))
                return bad_value(err, jid, "differs from the job_id inside the msgpack map");
            copy_value(spec->job_id, sizeof(spec->job_id), jid);
        }
        return 0;
    }
    return decode_fields(spec, fields, nfields, entry_id, allow_test_types, err);
}
