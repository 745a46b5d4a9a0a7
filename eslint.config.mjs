// Lint of the web tier's TypeScript (npm test runs it first): ESLint's and typescript-eslint's
// recommended rules, type-aware where they need the types.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['**/dist/**', 'node_modules/**', 'build/**', 'build-*/**', 'tools/web/public/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['proto/ts/src/**/*.ts', 'proto/react/src/**/*.{ts,tsx}', 'tools/web/src/**/*.ts', 'tools/web/page/**/*.tsx'],
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
  },
);
