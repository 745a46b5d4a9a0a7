// Supabase access tokens, verified with `jose` (a well-kept, audited JOSE library: algorithm
// confusion, key selection and claim checks are where hand-written JWT code goes wrong).
//
// Supabase signs tokens with asymmetric keys (ES256 or RS256, a `kid` in the header) published
// as a JWKS at <project>/auth/v1/.well-known/jwks.json; legacy projects sign HS256 with the
// shared SUPABASE_JWT_SECRET. Each algorithm is pinned to its kind of key: an ES256/RS256 token
// is checked only against the JWKS (its keys cached, fetched again when an unknown `kid`
// arrives, at most every 30 s), an HS256 token only against the secret (so an HS256 token
// "signed" with a public key is refused), anything else (none, HS384...) is refused. Claims:
// `exp` (at most JWT_LEEWAY_SEC of clock skew), `nbf`, `iss` (<project>/auth/v1) and `aud`
// (`authenticated`).

import { createHmac } from 'node:crypto';
import { createRemoteJWKSet, decodeProtectedHeader, jwtVerify, type JWTVerifyGetKey } from 'jose';

export interface Claims {
  sub: string;
  exp: number;
  role?: string;
  email?: string;
  [k: string]: unknown;
}

/** Clock skew tolerated on exp and nbf: a few seconds, not a grace period. */
export const JWT_LEEWAY_SEC = 5;

export interface AuthOptions {
  /** The project's JWKS (SUPABASE_JWKS_URL, or SUPABASE_URL + /auth/v1/.well-known/jwks.json). */
  jwksUrl?: string;
  /** The legacy HS256 secret (SUPABASE_JWT_SECRET); HS256 tokens are refused without it. */
  hsSecret?: string;
  /** The expected `iss` (SUPABASE_URL + /auth/v1); unchecked when undefined. */
  issuer?: string;
  /** The expected `aud`. */
  audience: string;
  leewaySec?: number;
  /** Least time between two fetches of the JWKS (an unknown kid fetches it again); 30 s. */
  jwksCooldownMs?: number;
  /** Told why a token was refused (for the log; never the token itself). */
  onRefused?: (why: string) => void;
}

export interface Verifier {
  /** The token's claims, or null: wrong shape, algorithm, key or signature; expired, not yet
   * valid, another issuer or audience, no `sub`. */
  verify(token: string): Promise<Claims | null>;
}

export function createVerifier(o: AuthOptions): Verifier {
  const jwks: JWTVerifyGetKey | null = o.jwksUrl
    ? createRemoteJWKSet(new URL(o.jwksUrl), {
        cooldownDuration: o.jwksCooldownMs ?? 30_000,
        cacheMaxAge: 600_000,
        timeoutDuration: 5_000,
      })
    : null;
  const secret = o.hsSecret ? new TextEncoder().encode(o.hsSecret) : null;
  const checks = {
    issuer: o.issuer,
    audience: o.audience,
    clockTolerance: o.leewaySec ?? JWT_LEEWAY_SEC,
    requiredClaims: ['exp', 'sub'],
  };
  const refused = (why: string) => {
    o.onRefused?.(why);
    return null;
  };
  return {
    async verify(token: string) {
      if (token.length > 8192) return refused('token too long');
      let alg: string | undefined;
      try {
        alg = decodeProtectedHeader(token).alg;
      } catch {
        return refused('not a JWS');
      }
      try {
        let payload;
        if (alg === 'HS256' && secret) ({ payload } = await jwtVerify(token, secret, { ...checks, algorithms: ['HS256'] }));
        else if ((alg === 'ES256' || alg === 'RS256') && jwks)
          ({ payload } = await jwtVerify(token, jwks, { ...checks, algorithms: ['ES256', 'RS256'] }));
        else return refused(`algorithm ${String(alg)} not accepted`);
        if (typeof payload.sub !== 'string' || typeof payload.exp !== 'number') return refused('no sub or exp');
        return payload as Claims;
      } catch (e) {
        return refused((e as { code?: string }).code ?? (e as Error).message);
      }
    },
  };
}

const b64url = (b: Buffer) => b.toString('base64url');

/** Signs claims with HS256 (tests and local development: the web tier never issues tokens in
 * production). */
export function signJwt(claims: Record<string, unknown>, secret: string): string {
  const h = b64url(Buffer.from(JSON.stringify({ alg: 'HS256', typ: 'JWT' })));
  const p = b64url(Buffer.from(JSON.stringify(claims)));
  const s = b64url(createHmac('sha256', secret).update(`${h}.${p}`).digest());
  return `${h}.${p}.${s}`;
}
