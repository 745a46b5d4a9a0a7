/*
 * test_tls: the TLS client session over memory (io/tls.h) against an in-process server (OpenSSL
 * on memory BIOs too), with certificates made here: a CA, server certificates for the right
 * name, another name, an IP address, an expired one and one of another CA, a client
 * certificate. Every failure must name its cause; data must cross both ways once established.
 */
#include "testutil.h"
#include "base/buf.h"
#include "io/tls.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    EVP_PKEY *key;
    X509 *cert;
} Cred;

static EVP_PKEY *new_key(void) {
    return EVP_EC_gen("P-256");
}

/* A certificate for key, signed by issuer (NULL: self-signed CA); valid from days_from to
 * days_to (relative to now); san like "DNS:localhost" (NULL: none). */
static X509 *make_cert(EVP_PKEY *key, const Cred *issuer, const char *cn, const char *san,
                       long days_from, long days_to) {
    X509 *x = X509_new();
    X509_set_version(x, 2);
    static long serial = 1;
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
    X509_gmtime_adj(X509_getm_notBefore(x), days_from * 86400);
    X509_gmtime_adj(X509_getm_notAfter(x), days_to * 86400);
    X509_set_pubkey(x, key);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer->cert) : name);
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer ? issuer->cert : x, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, NID_basic_constraints,
                                              issuer ? "CA:FALSE" : "critical,CA:TRUE");
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    if (san) {
        ext = X509V3_EXT_conf_nid(NULL, &ctx, NID_subject_alt_name, san);
        X509_add_ext(x, ext, -1);
        X509_EXTENSION_free(ext);
    }
    X509_sign(x, issuer ? issuer->key : key, EVP_sha256());
    return x;
}

static Cred ca, other_ca, client;
static X509 *srv_good, *srv_other_name, *srv_ip, *srv_expired, *srv_alien;
static EVP_PKEY *srv_key;
static char ca_file[64], client_cert_file[64], client_key_file[64];

static void write_pem_cert(const char *path, X509 *x) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    PEM_write_X509(f, x);
    fclose(f);
}

static int setup(void **state) {
    (void)state;
    ca.key = new_key();
    ca.cert = make_cert(ca.key, NULL, "test CA", NULL, -1, 30);
    other_ca.key = new_key();
    other_ca.cert = make_cert(other_ca.key, NULL, "another CA", NULL, -1, 30);
    srv_key = new_key();
    srv_good = make_cert(srv_key, &ca, "cache.test", "DNS:cache.test", -1, 30);
    srv_other_name = make_cert(srv_key, &ca, "other.test", "DNS:other.test", -1, 30);
    srv_ip = make_cert(srv_key, &ca, "127.0.0.1", "IP:127.0.0.1", -1, 30);
    srv_expired = make_cert(srv_key, &ca, "cache.test", "DNS:cache.test", -30, -1);
    srv_alien = make_cert(srv_key, &other_ca, "cache.test", "DNS:cache.test", -1, 30);
    client.key = new_key();
    client.cert = make_cert(client.key, &ca, "worker", "DNS:worker", -1, 30);
    snprintf(ca_file, sizeof(ca_file), "/tmp/test_tls_ca_%d.pem", (int)getpid());
    snprintf(client_cert_file, sizeof(client_cert_file), "/tmp/test_tls_cc_%d.pem", (int)getpid());
    snprintf(client_key_file, sizeof(client_key_file), "/tmp/test_tls_ck_%d.pem", (int)getpid());
    write_pem_cert(ca_file, ca.cert);
    write_pem_cert(client_cert_file, client.cert);
    FILE *f = fopen(client_key_file, "w");
    PEM_write_PrivateKey(f, client.key, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    unlink(ca_file);
    unlink(client_cert_file);
    unlink(client_key_file);
    X509 *certs[] = {ca.cert,        other_ca.cert, client.cert, srv_good,
                     srv_other_name, srv_ip,        srv_expired, srv_alien};
    for (size_t i = 0; i < sizeof(certs) / sizeof(certs[0]); i++)
        X509_free(certs[i]);
    EVP_PKEY_free(ca.key);
    EVP_PKEY_free(other_ca.key);
    EVP_PKEY_free(client.key);
    EVP_PKEY_free(srv_key);
    return 0;
}

/* The server side: an SSL on memory BIOs with cert; require_client: verify a client cert. */
typedef struct {
    SSL_CTX *ctx;
    SSL *ssl;
    BIO *in, *out;
} Server;

static void server_init(Server *s, X509 *cert, int require_client, int max_version) {
    s->ctx = SSL_CTX_new(TLS_server_method());
    assert_int_equal(SSL_CTX_use_certificate(s->ctx, cert), 1);
    assert_int_equal(SSL_CTX_use_PrivateKey(s->ctx, srv_key), 1);
    if (max_version)
        SSL_CTX_set_max_proto_version(s->ctx, max_version);
    if (require_client) {
        X509_STORE_add_cert(SSL_CTX_get_cert_store(s->ctx), ca.cert);
        SSL_CTX_set_verify(s->ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    }
    s->ssl = SSL_new(s->ctx);
    s->in = BIO_new(BIO_s_mem());
    s->out = BIO_new(BIO_s_mem());
    SSL_set_bio(s->ssl, s->in, s->out);
    SSL_set_accept_state(s->ssl);
}

static void server_free(Server *s) {
    SSL_free(s->ssl);
    SSL_CTX_free(s->ctx);
}

/* Move bytes both ways until neither side has more to say; the client's plaintext in plain.
 * Returns the client's last read result (0, or -1 with err). */
static int pump(Server *s, TlsSession *c, Buf *plain, Err *err) {
    Buf wire = BUF_INIT;
    int rc = 0;
    for (int round = 0; round < 20; round++) {
        buf_reset(&wire);
        tls_session_output(c, &wire);
        int moved = (int)wire.len;
        if (wire.len)
            BIO_write(s->in, wire.data, (int)wire.len);
        if (!SSL_is_init_finished(s->ssl))
            SSL_do_handshake(s->ssl);
        char tmp[4096];
        int n;
        while ((n = SSL_read(s->ssl, tmp, sizeof(tmp))) > 0) /* echo what the client sent */
            SSL_write(s->ssl, tmp, n);
        size_t pend = BIO_ctrl_pending(s->out);
        moved += (int)pend;
        if (pend) {
            char *b = malloc(pend);
            BIO_read(s->out, b, (int)pend);
            tls_session_feed(c, b, pend);
            free(b);
        }
        rc = tls_session_read(c, plain, err);
        if (rc != 0 || moved == 0)
            break;
    }
    buf_free(&wire);
    ERR_clear_error();
    return rc;
}

static TlsConfig *config(const char *cert, const char *key) {
    TlsOptions o = {ca_file, cert, key, "TEST_CA_FILE", "TEST_CERT_FILE"};
    Err err;
    TlsConfig *c = tls_config_new(&o, &err);
    assert_non_null(c);
    return c;
}

/* A handshake with a server holding cert; the outcome's message in msg ("" when it worked). */
static int handshake(X509 *cert, const char *host, int require_client, int with_client_cert,
                     int max_version, char *msg, size_t msgsz) {
    Server s;
    server_init(&s, cert, require_client, max_version);
    TlsConfig *cfg =
        with_client_cert ? config(client_cert_file, client_key_file) : config(NULL, NULL);
    Err err;
    err_clear(&err);
    TlsSession *c = tls_session_new(cfg, host, &err);
    assert_non_null(c);
    Buf plain = BUF_INIT;
    int rc = pump(&s, c, &plain, &err);
    if (rc == 0 && tls_session_established(c)) { /* data both ways: an echo */
        assert_int_equal(tls_session_write(c, "PING\r\n", 6, &err), 0);
        rc = pump(&s, c, &plain, &err);
        if (rc == 0)
            assert_string_equal(plain.data, "PING\r\n");
    }
    snprintf(msg, msgsz, "%s", rc == 0 && tls_session_established(c) ? "" : err.msg);
    if (getenv("TEST_TLS_VERBOSE")) /* the messages as an operator reads them */
        fprintf(stderr, "%s: %s\n", host, msg[0] ? msg : "established");
    int ok = rc == 0 && tls_session_established(c);
    buf_free(&plain);
    tls_session_free(c);
    tls_config_free(cfg);
    server_free(&s);
    return ok;
}

static void test_verified_session_carries_data(void **state) {
    (void)state;
    char msg[ERR_MSG_MAX];
    assert_true(handshake(srv_good, "cache.test", 0, 0, 0, msg, sizeof(msg)));
    assert_true(handshake(srv_ip, "127.0.0.1", 0, 0, 0, msg, sizeof(msg))); /* by address */
    /* TLS 1.2 is accepted too */
    assert_true(handshake(srv_good, "cache.test", 0, 0, TLS1_2_VERSION, msg, sizeof(msg)));
}

static void test_bad_certificates_are_named(void **state) {
    (void)state;
    char msg[ERR_MSG_MAX];
    assert_false(handshake(srv_alien, "cache.test", 0, 0, 0, msg, sizeof(msg)));
    assert_non_null(strstr(msg, "unknown CA"));
    assert_non_null(strstr(msg, "(TEST_CA_FILE, or the system's store)"));
    assert_false(handshake(srv_other_name, "cache.test", 0, 0, 0, msg, sizeof(msg)));
    assert_non_null(strstr(msg, "name mismatch"));
    assert_false(handshake(srv_good, "127.0.0.1", 0, 0, 0, msg, sizeof(msg)));
    assert_non_null(strstr(msg, "name mismatch"));
    assert_false(handshake(srv_expired, "cache.test", 0, 0, 0, msg, sizeof(msg)));
    assert_non_null(strstr(msg, "expired"));
    /* a server that offers only TLS 1.1: no version both sides accept */
    assert_false(handshake(srv_good, "cache.test", 0, 0, TLS1_1_VERSION, msg, sizeof(msg)));
    assert_non_null(strstr(msg, "protocol"));
}

static void test_mutual_tls(void **state) {
    (void)state;
    char msg[ERR_MSG_MAX];
    assert_false(handshake(srv_good, "cache.test", 1, 0, 0, msg, sizeof(msg)));
    assert_non_null(strstr(msg, "refused this side's certificate (mutual TLS: TEST_CERT_FILE)"));
    assert_true(handshake(srv_good, "cache.test", 1, 1, 0, msg, sizeof(msg)));
}

static void test_plain_text_peer(void **state) {
    (void)state;
    TlsConfig *cfg = config(NULL, NULL);
    Err err;
    TlsSession *c = tls_session_new(cfg, "cache.test", &err);
    const char *redis = "-ERR unknown command\r\n";
    tls_session_feed(c, redis, strlen(redis));
    Buf plain = BUF_INIT;
    assert_int_equal(tls_session_read(c, &plain, &err), -1);
    assert_non_null(strstr(err.msg, "did not answer in TLS"));
    buf_free(&plain);
    tls_session_free(c);
    tls_config_free(cfg);
}

static void test_config_errors(void **state) {
    (void)state;
    Err err;
    TlsOptions o = {"/no/such/ca.pem", NULL, NULL, NULL, NULL};
    assert_null(tls_config_new(&o, &err));
    assert_non_null(strstr(err.msg, "cannot load the CA certificates of /no/such/ca.pem"));
    TlsOptions o2 = {ca_file, client_cert_file, NULL, NULL, NULL};
    assert_null(tls_config_new(&o2, &err));
    assert_non_null(strstr(err.msg, "needs its key"));
    TlsOptions o3 = {ca_file, client_cert_file, ca_file, NULL, NULL}; /* a certificate is no key */
    assert_null(tls_config_new(&o3, &err));
    assert_non_null(strstr(err.msg, "cannot use the client key"));
    TlsOptions o4 = {NULL, NULL, NULL, NULL, NULL}; /* the system's store */
    TlsConfig *c = tls_config_new(&o4, &err);
    assert_non_null(c);
    tls_config_free(c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_verified_session_carries_data),
        cmocka_unit_test(test_bad_certificates_are_named),
        cmocka_unit_test(test_mutual_tls),
        cmocka_unit_test(test_plain_text_peer),
        cmocka_unit_test(test_config_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
