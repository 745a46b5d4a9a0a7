// The page's one script: tools/web/page/main.tsx and what it imports (React, TanStack Query,
// @backup-worker/react and the browser client) bundled and minified by esbuild into
// tools/web/dist/page/app.js, which the server serves as /assets/app.js. Type checking is tsc's
// (npm run build runs it first); esbuild only bundles.
import { build } from 'esbuild';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
await build({
  entryPoints: [join(here, 'main.tsx')],
  outfile: join(here, '../dist/page/app.js'),
  bundle: true,
  minify: true,
  sourcemap: true,
  format: 'esm',
  target: ['es2022'],
  jsx: 'automatic',
  define: { 'process.env.NODE_ENV': '"production"' },
  logLevel: 'warning',
});
