/*
 * qscripts: the scripts, embedded from worker/lua/ at build time (see
 * embed.cmake). Each script's source is the shared prelude followed by its
 * own file; the SHA-1 of that text is what EVALSHA names.
 */
#include "qscripts.h"
#include "buf.h"
#include "qscripts_lua.h"

#include <openssl/sha.h>
#include <stdio.h>
#include <string.h>

static const char *const own[QS_COUNT] = {lua_start,    lua_finish,  lua_renew, lua_progress,
                                          lua_handback, lua_promote, lua_retire};
static char *bodies[QS_COUNT];
static char shas[QS_COUNT][41];

const char *qscript_body(QScript s) {
    if (bodies[s] == NULL) {
        Buf b = BUF_INIT;
        buf_puts(&b, lua_prelude);
        buf_puts(&b, own[s]);
        bodies[s] = buf_steal(&b);
    }
    return bodies[s];
}

const char *qscript_sha(QScript s) {
    if (shas[s][0] == '\0') {
        const char *body = qscript_body(s);
        unsigned char md[SHA_DIGEST_LENGTH];
        SHA1((const unsigned char *)body, strlen(body), md);
        for (int i = 0; i < SHA_DIGEST_LENGTH; i++)
            snprintf(shas[s] + 2 * i, 3, "%02x", md[i]);
    }
    return shas[s];
}
