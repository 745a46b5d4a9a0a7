/* segfile: a stored change segment checked and decoded (see segfile.h). */
#include "capture/segfile.h"

#include "aws/sigv4.h"
#include "io/codec.h"
#include "io/crypt.h"

#include <string.h>

int segfile_decode(const char *data, size_t len, const SegFileRecord *rec, const Keys *keys,
                   Buf *out, Err *err) {
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
    if (!codec_list_encrypted(&codecs) && keys_required(keys)) {
        err_set(err, ERR_PERMANENT, ERR_CODE_INVALID,
                "change segment %s is not encrypted, and BACKUP_ENCRYPTION=required trusts only "
                "what a known key opens",
                rec->key);
        return -1;
    }
    Buf cj = BUF_INIT;
    codec_list_json(&codecs, &cj);
    CryptParams cp = {.user_id = rec->user_id,
                      .backup_id = rec->id,
                      .codecs_json = cj.data,
                      .have_dek = 0, /* the data key is wrapped in the segment's own header */
                      .unwrap = keys_unwrap_fn,
                      .unwrap_data = (void *)keys};
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
