/*
 * json: a strict syntax check of JSON text (RFC 8259), without building
 * anything: for reading backup documents line by line, where a row is passed
 * on as text and must never go through a double. Nesting deeper than
 * JSON_MAX_DEPTH is refused.
 */
#ifndef BW_JSON_H
#define BW_JSON_H

#include <stddef.h>

#define JSON_MAX_DEPTH 512

/* 1 if s[0..len) is exactly one JSON value (whitespace around allowed); else 0, and *at
 * (if not NULL) is the offset of the first byte that is wrong. */
int json_valid(const char *s, size_t len, size_t *at);

/*
 * A string field of a flat JSON object (a header, a manifest): its raw text between the
 * quotes (escapes kept), or "" for null; numbers as their digits; a flat array (no nesting,
 * such as "codecs") as its raw text with the brackets. -1 if absent or longer than
 * outsz - 1. The first occurrence of "name": wins: for objects this project writes. The one
 * field scanner: headers, manifests, KMS answers and bfile all read through it.
 */
int json_field(const char *json, size_t len, const char *name, char *out, size_t outsz);

#endif
