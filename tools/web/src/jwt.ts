// HS256 JSON Web Tokens as Supabase signs them (SUPABASE_JWT_SECRET). Written
// here rather than taken from a library: verifying one fixed algorithm is a
// dozen lines of node:crypto, and refusing every other `alg` (none, RS256 with
// the secret as a public key) is the point.

import { createHmac, timingSafeEqual } from 'node:crypto';

export interface Claims {
  sub: string;
  exp: number;
  role?: string;
  email?: string;
  [k: string]: unknown;
}

const b64url = (b: Buffer) => b.toString('base64url');

function decodePart(s: string): Record<string, unknown> | null {
  if (!/^[A-Za-z0-9_-]+$/.test(s)) return null;
  try {
    const v = JSON.parse(Buffer.from(s, 'base64url').toString('utf8'));
    return v && typeof v === 'object' && !Array.isArray(v) ? v : null;
  } catch {
    return null;
  }
}

/** The token's claims, or null: wrong shape, algorithm or signature, expired, not yet valid, no `sub`. */
/** Clock skew tolerated on exp and nbf: a few seconds, not a grace period (issue 29: 30 s let a
 * token expired half a minute ago in). */
export const JWT_LEEWAY_SEC = 5;

export function verifyJwt(token: string, secret: string, nowSec = Date.now() / 1000, leewaySec = JWT_LEEWAY_SEC): Claims | null {
  const parts = token.split('.');
  if (parts.length !== 3 || token.length > 8192) return null;
  const header = decodePart(parts[0]);
  if (!header || header.alg !== 'HS256') return null;
  const want = createHmac('sha256', secret).update(`${parts[0]}.${parts[1]}`).digest();
  let got: Buffer;
  try {
    got = Buffer.from(parts[2], 'base64url');
  } catch {
    return null;
  }
  if (got.length !== want.length || !timingSafeEqual(got, want)) return null;
  const c = decodePart(parts[1]);
  if (!c || typeof c.sub !== 'string' || typeof c.exp !== 'number') return null;
  if (c.exp + leewaySec < nowSec) return null;
  if (typeof c.nbf === 'number' && c.nbf - leewaySec > nowSec) return null;
  return c as Claims;
}

/** Signs claims (tests and local development: the web tier never issues tokens in production). */
export function signJwt(claims: Record<string, unknown>, secret: string): string {
  const h = b64url(Buffer.from(JSON.stringify({ alg: 'HS256', typ: 'JWT' })));
  const p = b64url(Buffer.from(JSON.stringify(claims)));
  const s = b64url(createHmac('sha256', secret).update(`${h}.${p}`).digest());
  return `${h}.${p}.${s}`;
}
