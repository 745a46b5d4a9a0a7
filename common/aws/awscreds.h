/*
 * awscreds: AWS credentials for request signing, static or from web identity.
 *
 * Static keys (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN)
 * are served as given. With a web identity (Kubernetes service accounts:
 * AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN), the provider calls STS
 * AssumeRoleWithWebIdentity on the loop, re-reading the token file each time
 * (the kubelet rotates it), and refreshes the temporary keys five minutes
 * before they expire (or at half their life if shorter); a failed refresh is
 * retried with backoff while the old keys remain valid. Secrets are never
 * logged.
 */
#ifndef BW_AWSCREDS_H
#define BW_AWSCREDS_H

#include "http/http.h"

#include <uv.h>

typedef struct AwsCreds AwsCreds;

typedef struct {
    const char *access_key, *secret_key, *session_token; /* static (session_token optional) */
    const char *token_file; /* web identity: a JWT file; with role_arn, replaces the above */
    const char *role_arn;
    const char *session_name; /* default backup-worker */
    const char *sts_endpoint; /* default https://sts.{region}.amazonaws.com */
    const char *region;
    const char *ca_file;
    int duration_s; /* requested lifetime of STS keys; default 3600 */
} AwsCredsOptions;

/* Strings are copied. With a web identity the first STS call starts now. */
AwsCreds *aws_creds_new(uv_loop_t *loop, HttpClient *http, const AwsCredsOptions *o);
void aws_creds_free(AwsCreds *c);
/*
 * The current keys (borrowed until the next loop turn): 1 when available, 0
 * while the first STS answer is awaited, -1 when it failed (aws_creds_error()
 * says why; retries continue in the background).
 */
int aws_creds_get(AwsCreds *c, const char **access_key, const char **secret_key,
                  const char **session_token);
const char *aws_creds_error(const AwsCreds *c);
/* Fetch new STS keys now (after an ExpiredToken answer, say); static keys: no-op. */
void aws_creds_refresh(AwsCreds *c);
/* 1 when the keys come from STS. */
int aws_creds_temporary(const AwsCreds *c);

#endif
