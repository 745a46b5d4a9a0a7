/* tls: a TLS client session over memory BIOs (see tls.h). */
#include "io/tls.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct TlsConfig {
    SSL_CTX *ctx;
    int has_cert;
    char ca_hint[96], cert_hint[96]; /* where to look, for failures' messages */
};

struct TlsSession {
    const TlsConfig *cfg;
    SSL *ssl;
    BIO *in, *out; /* owned by ssl */
    int established;
    char host[256];
};

/* The first error OpenSSL queued, as text ("" when none). */
static void ssl_error_text(char *out, size_t n) {
    unsigned long e = ERR_get_error();
    if (e == 0) {
        snprintf(out, n, "%s", "");
        return;
    }
    ERR_error_string_n(e, out, n);
    ERR_clear_error();
}

TlsConfig *tls_config_new(const TlsOptions *o, Err *err) {
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    char why[256];
    if (ctx == NULL) {
        ssl_error_text(why, sizeof(why));
        err_set(err, ERR_PERMANENT, ERR_CODE_CONFIG, "TLS: cannot create a context: %s", why);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    int ok = o->ca_file ? SSL_CTX_load_verify_locations(ctx, o->ca_file, NULL)
                        : SSL_CTX_set_default_verify_paths(ctx);
    if (ok != 1) {
        ssl_error_text(why, sizeof(why));
        err_set(err, ERR_PERMANENT, ERR_CODE_CONFIG,
                "TLS: cannot load the CA certificates %s%s: %s",
                o->ca_file ? "of " : "(the system's store)", o->ca_file ? o->ca_file : "", why);
        SSL_CTX_free(ctx);
        return NULL;
    }
    if ((o->cert_file != NULL) != (o->key_file != NULL)) {
        err_set(err, ERR_PERMANENT, ERR_CODE_CONFIG, "%s",
                "TLS: a client certificate needs its key, and a key its certificate");
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (o->cert_file) {
        const char *what = "certificate";
        if (SSL_CTX_use_certificate_chain_file(ctx, o->cert_file) != 1 ||
            (what = "key", SSL_CTX_use_PrivateKey_file(ctx, o->key_file, SSL_FILETYPE_PEM) != 1) ||
            (what = "key (it does not match the certificate)",
             SSL_CTX_check_private_key(ctx) != 1)) {
            ssl_error_text(why, sizeof(why));
            err_set(err, ERR_PERMANENT, ERR_CODE_CONFIG, "TLS: cannot use the client %s of %s: %s",
                    what, strcmp(what, "certificate") == 0 ? o->cert_file : o->key_file, why);
            SSL_CTX_free(ctx);
            return NULL;
        }
    }
    TlsConfig *c = xcalloc(1, sizeof(*c));
    c->ctx = ctx;
    c->has_cert = o->cert_file != NULL;
    snprintf(c->ca_hint, sizeof(c->ca_hint), "%s%s", o->ca_setting ? o->ca_setting : "the CA file",
             ", or the system's store");
    snprintf(c->cert_hint, sizeof(c->cert_hint), "mutual TLS: %s",
             o->cert_setting ? o->cert_setting : "a client certificate");
    return c;
}

void tls_config_free(TlsConfig *c) {
    if (c == NULL)
        return;
    SSL_CTX_free(c->ctx);
    free(c);
}

const char *tls_config_client_hint(const TlsConfig *c) {
    return c->has_cert ? NULL : c->cert_hint;
}

static int is_ip(const char *host) {
    unsigned char a[16];
    return inet_pton(AF_INET, host, a) == 1 || inet_pton(AF_INET6, host, a) == 1;
}

TlsSession *tls_session_new(TlsConfig *c, const char *host, Err *err) {
    ERR_clear_error();
    TlsSession *s = xcalloc(1, sizeof(*s));
    s->cfg = c;
    snprintf(s->host, sizeof(s->host), "%s", host);
    s->ssl = SSL_new(c->ctx);
    s->in = BIO_new(BIO_s_mem());
    s->out = BIO_new(BIO_s_mem());
    if (s->ssl == NULL || s->in == NULL || s->out == NULL) {
        BIO_free(s->in);
        BIO_free(s->out);
        SSL_free(s->ssl);
        free(s);
        err_set(err, ERR_RETRYABLE, ERR_CODE_NOMEM, "%s", "TLS: cannot create a session");
        return NULL;
    }
    SSL_set_bio(s->ssl, s->in, s->out);
    SSL_set_connect_state(s->ssl);
    /* the name the certificate must carry; SNI only for a name (RFC 6066: never an address) */
    int ok = is_ip(host)
                 ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(s->ssl), host)
                 : SSL_set_tlsext_host_name(s->ssl, host) == 1 && SSL_set1_host(s->ssl, host);
    if (!ok) {
        tls_session_free(s);
        err_set(err, ERR_PERMANENT, ERR_CODE_CONFIG, "TLS: cannot verify the host name '%.100s'",
                host);
        return NULL;
    }
    SSL_do_handshake(s->ssl); /* writes the ClientHello into the output BIO */
    return s;
}

void tls_session_free(TlsSession *s) {
    if (s == NULL)
        return;
    SSL_free(s->ssl); /* frees both BIOs */
    free(s);
}

void tls_session_feed(TlsSession *s, const void *buf, size_t len) {
    if (len > 0)
        BIO_write(s->in, buf, (int)len);
}

/* Why the handshake (or the session) failed, named for an operator. */
static void failed(TlsSession *s, int rc, Err *err) {
    long v = SSL_get_verify_result(s->ssl);
    char why[256], hint[256];
    ssl_error_text(why, sizeof(why));
    if (v != X509_V_OK) {
        const char *cause = "the server's certificate was refused";
        switch (v) {
        case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
        case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
        case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
        case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
        case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
            snprintf(hint, sizeof(hint),
                     "unknown CA: the server's certificate is not signed by a CA this side trusts "
                     "(%s)",
                     s->cfg->ca_hint);
            cause = hint;
            break;
        case X509_V_ERR_HOSTNAME_MISMATCH:
        case X509_V_ERR_IP_ADDRESS_MISMATCH:
            cause = "name mismatch: the server's certificate is not for the host dialled";
            break;
        case X509_V_ERR_CERT_HAS_EXPIRED:
            cause = "expired: the server's certificate is past its validity";
            break;
        case X509_V_ERR_CERT_NOT_YET_VALID:
            cause = "not yet valid: the server's certificate starts later";
            break;
        default:
            break;
        }
        err_set(err, ERR_PERMANENT, ERR_CODE_CONNECT, "TLS handshake with %s failed: %s (%s)",
                s->host, cause, X509_verify_cert_error_string(v));
        return;
    }
    const char *cause = NULL;
    if (strstr(why, "wrong version number") || strstr(why, "packet length too long") ||
        strstr(why, "record layer failure"))
        cause = "the server did not answer in TLS (a plain-text port?)";
    else if (strstr(why, "unsupported protocol") || strstr(why, "protocol version") ||
             strstr(why, "no protocols available"))
        cause = "protocol: no TLS version both sides accept (TLS 1.2 at least here)";
    else if (strstr(why, "certificate required") || strstr(why, "handshake failure") ||
             strstr(why, "bad certificate") || strstr(why, "unknown ca")) {
        snprintf(hint, sizeof(hint), "the server refused this side's certificate (%s)",
                 s->cfg->cert_hint);
        cause = hint;
    }
    if (why[0] == '\0' && rc == SSL_ERROR_SYSCALL)
        snprintf(why, sizeof(why), "%s", "the connection ended during the handshake");
    err_set(err, cause ? ERR_PERMANENT : ERR_RETRYABLE, ERR_CODE_CONNECT,
            "TLS %s %s failed: %s%s%s", s->established ? "session with" : "handshake with", s->host,
            cause ? cause : why, cause && why[0] ? " - " : "", cause ? why : "");
}

int tls_session_read(TlsSession *s, Buf *out, Err *err) {
    ERR_clear_error();
    if (!s->established) {
        int r = SSL_do_handshake(s->ssl);
        if (r != 1) {
            int e = SSL_get_error(s->ssl, r);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                return 0;
            failed(s, e, err);
            return -1;
        }
        s->established = 1;
    }
    char buf[16384];
    for (;;) {
        int n = SSL_read(s->ssl, buf, sizeof(buf));
        if (n > 0) {
            buf_append(out, buf, (size_t)n);
            continue;
        }
        int e = SSL_get_error(s->ssl, n);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
            return 0;
        if (e == SSL_ERROR_ZERO_RETURN) {
            err_set(err, ERR_RETRYABLE, ERR_CODE_CONNECT, "TLS: %s closed the session", s->host);
            return -1;
        }
        failed(s, e, err);
        return -1;
    }
}

int tls_session_write(TlsSession *s, const void *buf, size_t len, Err *err) {
    ERR_clear_error();
    size_t off = 0;
    while (off < len) {
        int n = SSL_write(s->ssl, (const char *)buf + off, (int)(len - off));
        if (n <= 0) {
            failed(s, SSL_get_error(s->ssl, n), err);
            return -1;
        }
        off += (size_t)n;
    }
    return 0;
}

void tls_session_output(TlsSession *s, Buf *out) {
    size_t n = BIO_ctrl_pending(s->out);
    if (n == 0)
        return;
    buf_reserve(out, n);
    int r = BIO_read(s->out, out->data + out->len, (int)n);
    if (r > 0) {
        out->len += (size_t)r;
        out->data[out->len] = '\0';
    }
}

int tls_session_established(const TlsSession *s) {
    return s->established;
}

const char *tls_session_describe(const TlsSession *s, char *out, size_t outsz) {
    if (!s->established)
        snprintf(out, outsz, "%s", "");
    else
        snprintf(out, outsz, "%s %s", SSL_get_version(s->ssl), SSL_get_cipher_name(s->ssl));
    return out;
}
