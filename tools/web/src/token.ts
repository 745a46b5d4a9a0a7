// `node tools/web/dist/token.js USER_ID [HOURS] [EMAIL]`: a JWT for local
// development, signed with SUPABASE_JWT_SECRET as Supabase would sign it (the
// quickstart prints one to sign in to the page). Never used in production:
// there, Supabase issues the tokens.
import { signJwt } from './jwt.js';

const [userId, hours = '12', email] = process.argv.slice(2);
const secret = process.env.SUPABASE_JWT_SECRET ?? '';
if (!userId || !/^[0-9a-f-]{36}$/i.test(userId) || !/^\d+$/.test(hours) || secret.length < 32) {
  process.stderr.write('usage: SUPABASE_JWT_SECRET=... node tools/web/dist/token.js USER_ID [HOURS] [EMAIL]\n');
  process.exit(2);
}
const now = Math.floor(Date.now() / 1000);
const claims: Record<string, unknown> = {
  sub: userId.toLowerCase(), role: 'authenticated', aud: 'authenticated', iat: now, exp: now + Number(hours) * 3600,
};
if (email) claims.email = email;
process.stdout.write(signJwt(claims, secret) + '\n');
