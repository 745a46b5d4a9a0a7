// A project's signing keys as Supabase publishes them: a JWKS over HTTP on loopback, with an
// ES256 and an RS256 key, keys that can be added (rotation), and tokens signed by any of them.
import { createServer } from 'node:http';
import { SignJWT, exportJWK, generateKeyPair } from 'jose';

export async function newKey(alg, kid) {
  const { publicKey, privateKey } = await generateKeyPair(alg, { extractable: true });
  const jwk = { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' };
  return { alg, kid, publicKey, privateKey, jwk };
}

/** Serves {keys} at /auth/v1/.well-known/jwks.json; `fetches` counts the requests. */
export async function startJwks() {
  const keys = [await newKey('ES256', 'es-1'), await newKey('RS256', 'rs-1')];
  const s = { keys, fetches: 0, down: false };
  const server = createServer((req, res) => {
    s.fetches++;
    if (s.down || req.url !== '/auth/v1/.well-known/jwks.json') {
      res.writeHead(s.down ? 503 : 404).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: s.keys.map((k) => k.jwk) }));
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  s.url = `http://127.0.0.1:${server.address().port}`;
  s.jwksUrl = `${s.url}/auth/v1/.well-known/jwks.json`;
  s.issuer = `${s.url}/auth/v1`;
  s.close = () => new Promise((r) => server.close(r));
  return s;
}

/** A token signed by key (header alg and kid from the key unless overridden). */
export async function signWith(key, claims, header = {}) {
  return new SignJWT(claims).setProtectedHeader({ alg: key.alg, kid: key.kid, typ: 'JWT', ...header }).sign(key.privateKey);
}
