/*
 * codec: the named transforms a stored object's bytes went through, in the
 * order they were applied ("gzip", "zstd", "aes-256-gcm"). A writer
 * builds its encoding chain from the list, a reader the reverse chain from the
 * same list, so that no caller compares compression names. The list is what a
 * backup's header, manifest and record carry (proto/README.md).
 *
 * A codec is its filter (io/filter.h, io/crypt.h) and one row of codec.c's table: its name,
 * key suffix, Content-Type, levels (a compression codec) and constructors. Nothing else names
 * it: key layouts, BACKUP_COMPRESSION, manifests and restores read the row.
 */
#ifndef BW_CODEC_H
#define BW_CODEC_H

#include "base/buf.h"
#include "base/err.h"
#include "io/crypt.h"
#include "io/filter.h"

#define CODEC_MAX 4

typedef struct {
    int n;
    char name[CODEC_MAX][16];
} CodecList;

typedef struct {
    int level;                /* the compression codec's (codec_levels); 0: its default */
    const CryptParams *crypt; /* aes-256-gcm: the object's names and data key */
} CodecOptions;

/* A compression codec's levels: 0, or -1 when name is none (BACKUP_COMPRESSION's check). */
int codec_levels(const char *name, int *min, int *max, int *def);
/* "gzip, zstd": the compression codecs, for messages. */
void codec_compression_names(char *out, size_t outsz);

/* From a comma-separated list ("" is no codec). -1 with err naming an unknown codec. */
int codec_list_parse(const char *csv, CodecList *out, Err *err);
/* From a JSON array of strings, as the header and manifest write it. */
int codec_list_from_json(const char *json, size_t len, CodecList *out, Err *err);
void codec_list_csv(const CodecList *l, char *out, size_t outsz);
/* ["gzip"] */
void codec_list_json(const CodecList *l, Buf *out);
/* 1 when the list holds name. */
int codec_list_has(const CodecList *l, const char *name);
/* The chain that applies the list in order, and the one that undoes it (reverse order).
 * NULL when the list holds aes-256-gcm and no CryptParams were given. */
FilterChain *codec_encoder(const CodecList *l, const CodecOptions *o);
FilterChain *codec_decoder(const CodecList *l, const CryptParams *crypt);
/* The compression codec ("gzip", "zstd") or "none": the v1 field `compression`. */
const char *codec_list_compression(const CodecList *l);
/* 1 when the last codec is aes-256-gcm (the stored bytes are encrypted). */
int codec_list_encrypted(const CodecList *l);
/* The stored object's Content-Type, and the key's suffix after ".json": each codec's in
 * order (".gz", ".zst", ".enc"; ".gz.enc" for gzip then aes-256-gcm; "" for none). */
const char *codec_content_type(const CodecList *l);
void codec_suffix(const CodecList *l, char *out, size_t outsz);

#endif
