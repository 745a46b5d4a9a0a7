/*
 * textval: a setting's value read strictly from its text, the same way wherever it comes from
 * (the environment, a connection URL): the whole text or nothing, limits checked.
 */
#ifndef BW_TEXTVAL_H
#define BW_TEXTVAL_H

/* true/1/yes/on or false/0/no/off (any case); 0, or -1 for anything else. */
int textval_bool(const char *s, int *out);
/* A whole number and a unit (ms, s, m, h, d; none: seconds) into milliseconds within
 * [min_ms, max_ms]; 0 or -1. */
int textval_duration_ms(const char *s, long long min_ms, long long max_ms, long long *out);
/* A decimal integer (optional leading '-') within [min, max]; 0 or -1. */
int textval_int(const char *s, long min, long max, long *out);

#endif
