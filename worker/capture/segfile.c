/* segfile: a stored change segment checked and decoded (see segfile.h). */
#include "capture/segfile.h"

#include "aws/sigv4.h"
#include "io/codec.h"

#include <string.h>

int segfile_check(const char *data, size_t len, const SegFileRecord *rec, const Keys *keys,
                  SegFileKey *k, Err *err) {
    memset(k, 0, sizeof(*k));
    char hex[65];
    sigv4_sha256_hex(data, len, hex);
    if (strcmp(hex, rec->checksum) != 0) {
        err_set(err, ERR_PERMANENT, ERR_CODE_INVALID,
                "Change segment checksum verification failed: %s (stored %.12s..., recorded "
                "%.12s...)",
                rec->key, hex, rec->checksum);
        return SEGFILE_CHECKSUM;
    }
    CodecList codecs;
    if (codec_list_parse(rec->codecs, &codecs, err) != 0) {
        err_prefix(err, "change segment %s", rec->key);
        return -1;
    }
    if (!codec_list_encrypted(&codecs)) {
        if (keys_required(keys)) {
            err_set(err, ERR_PERMANENT, ERR_CODE_INVALID,
                    "change segment %s is not encrypted, and BACKUP_ENCRYPTION=required trusts "
                    "only what a known key opens",
                    rec->key);
            return -1;
        }
        return 0;
    }
    k->encrypted = 1;
    /* the record's wrapping (a rekey rewrites it, not the object); the header's when the record
     * has none (before 023), or names a key this process lacks while the header's is here (a
     * rekey to a key not yet given to every worker, as for backups) */
    int rec_has = rec->key_id && rec->key_id[0];
    if (rec_has && keys_has(keys, rec->key_id)) {
        snprintf(k->key_id, sizeof(k->key_id), "%s", rec->key_id);
        snprintf(k->wrapped, sizeof(k->wrapped), "%s", rec->wrapped_key ? rec->wrapped_key : "");
        return 0;
    }
    CryptHeader h;
    int r = crypt_header_parse(data, len, &h, err);
    if (r == 0)
        err_set(err, ERR_PERMANENT, ERR_CODE_INVALID, "the envelope header is cut short");
    if (r != 1) {
        err_prefix(err, "change segment %s cannot be decoded", rec->key);
        return -1;
    }
    if (rec_has && !keys_has(keys, h.key_id)) { /* neither is here: the error names the record's */
        snprintf(k->key_id, sizeof(k->key_id), "%s", rec->key_id);
        snprintf(k->wrapped, sizeof(k->wrapped), "%s", rec->wrapped_key ? rec->wrapped_key : "");
    } else {
        snprintf(k->key_id, sizeof(k->key_id), "%s", h.key_id);
        snprintf(k->wrapped, sizeof(k->wrapped), "%s", h.wrapped_key);
    }
    crypt_wipe(&h, sizeof(h));
    return 0;
}

int segfile_decode(const char *data, size_t len, const SegFileRecord *rec, const unsigned char *dek,
                   Buf *out, Err *err) {
    CodecList codecs;
    if (codec_list_parse(rec->codecs, &codecs, err) != 0) {
        err_prefix(err, "change segment %s", rec->key);
        return -1;
    }
    Buf cj = BUF_INIT;
    codec_list_json(&codecs, &cj);
    CryptParams cp = {.user_id = rec->user_id,
                      .backup_id = rec->id,
                      .codecs_json = cj.data,
                      .have_dek = dek != NULL};
    if (dek)
        memcpy(cp.dek, dek, CRYPT_KEY_LEN);
    FilterChain *dec = codec_decoder(&codecs, &cp);
    int rc = filter_chain_write(dec, data, len, out, err);
    if (rc == 0)
        rc = filter_chain_finish(dec, out, err);
    filter_chain_free(dec);
    crypt_wipe(&cp, sizeof(cp));
    buf_free(&cj);
    if (rc != 0)
        err_prefix(err, "change segment %s cannot be decoded", rec->key);
    return rc != 0 ? -1 : 0;
}
