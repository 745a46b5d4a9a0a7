/*
 * tls: a TLS client session over memory, for connections the event loop drives itself.
 *
 * OpenSSL does the protocol (SSL with two memory BIOs, SSL_set_bio): the caller moves bytes
 * between the socket and the session, so one code path serves a plain and a TLS connection and
 * nothing here blocks or touches a file descriptor. The peer is always verified: its chain
 * against the system's CA store or the configured CA file, its name (or IP address) against the
 * host the caller dialled, which is also sent as SNI; TLS 1.2 at least. A failed handshake names
 * its cause (an unknown CA, a name mismatch, an expired certificate, the protocol) and the
 * session never falls back to plain text. Nothing here logs, and no key material leaves it.
 *
 *   TlsConfig *cfg = tls_config_new(&opts, &err);        // once per process and endpoint
 *   TlsSession *s = tls_session_new(cfg, "cache.example.com", &err);
 *   tls_session_output(s, &out);                           // the ClientHello: send it
 *   on bytes from the socket: tls_session_feed(s, buf, n);
 *                             tls_session_read(s, &plain, &err);   // handshake, then plaintext
 *                             tls_session_output(s, &out);         // whatever it must send
 *   to send: tls_session_write(s, buf, n, &err); tls_session_output(s, &out);
 */
#ifndef BW_TLS_H
#define BW_TLS_H

#include "base/buf.h"
#include "base/err.h"

#include <stddef.h>

typedef struct TlsConfig TlsConfig;
typedef struct TlsSession TlsSession;

typedef struct {
    const char *ca_file;   /* PEM CA bundle; NULL: the system's CA store */
    const char *cert_file; /* client certificate (PEM, mutual TLS); NULL: none */
    const char *key_file;  /* its private key (PEM); required with cert_file */
    /* the settings that hold them, named in failures ("REDIS_CA_FILE"); NULL: not named */
    const char *ca_setting, *cert_setting;
} TlsOptions;

/* The context every session of an endpoint shares. NULL with err naming the file at fault. */
TlsConfig *tls_config_new(const TlsOptions *o, Err *err);
void tls_config_free(TlsConfig *c);
/* Without a client certificate: what to configure for one ("mutual TLS: ..."), for a message
 * about a peer that ended the session as it began; with one: NULL. */
const char *tls_config_client_hint(const TlsConfig *c);

/* A client session to host (a name or an IP address: verified against the certificate). */
TlsSession *tls_session_new(TlsConfig *c, const char *host, Err *err);
void tls_session_free(TlsSession *s);

/* Bytes that came from the peer. */
void tls_session_feed(TlsSession *s, const void *buf, size_t len);
/* Go on with the handshake, then decrypt what was fed into out. 0 (more input needed or
 * nothing to decrypt: check tls_session_established), or -1 with err naming the cause
 * (ERR_PERMANENT for a certificate or protocol failure: retrying would meet it again). */
int tls_session_read(TlsSession *s, Buf *out, Err *err);
/* Encrypt plaintext (after the handshake). 0, or -1 with err. */
int tls_session_write(TlsSession *s, const void *buf, size_t len, Err *err);
/* Move the bytes the session must send (handshake records, encrypted data) into out. */
void tls_session_output(TlsSession *s, Buf *out);
/* 1 once the handshake completed and the peer was verified. */
int tls_session_established(const TlsSession *s);
/* "TLSv1.3 TLS_AES_256_GCM_SHA384" for logs, "" before the handshake. */
const char *tls_session_describe(const TlsSession *s, char *out, size_t outsz);

#endif
