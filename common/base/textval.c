/* textval: settings' values read from text (see textval.h). */
#include "base/textval.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int textval_bool(const char *s, int *out) {
    static const char *yes[] = {"true", "1", "yes", "on"};
    static const char *no[] = {"false", "0", "no", "off"};
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = 1;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = 0;
            return 0;
        }
    }
    return -1;
}

int textval_duration_ms(const char *s, long long min_ms, long long max_ms, long long *out) {
    static const struct {
        const char *unit;
        long long ms;
    } units[] = {{"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000}, {"", 1000}};
    const char *p = s;
    if (!isdigit((unsigned char)*p))
        return -1;
    long long v = 0;
    while (isdigit((unsigned char)*p)) {
        if (v > 1000000000000LL)
            return -1;
        v = v * 10 + (*p++ - '0');
    }
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcmp(p, units[i].unit) == 0) {
            long long ms = v * units[i].ms;
            if (ms < min_ms || ms > max_ms)
                return -1;
            *out = ms;
            return 0;
        }
    }
    return -1;
}

int textval_int(const char *s, long min, long max, long *out) {
    if (*s == '\0')
        return -1;
    for (const char *p = s; *p; p++)
        if (!isdigit((unsigned char)*p) && !(p == s && *p == '-'))
            return -1;
    errno = 0;
    char *end = NULL;
    long v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}
