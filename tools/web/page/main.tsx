// The reference page: sign-in (paste a Supabase access token) and the seed's "Backup de datos"
// section from @backup-worker/react. Bundled by esbuild (bundle.mjs) into one script the page's
// Content-Security-Policy allows ('self' only).

import { useState } from 'react';
import { createRoot } from 'react-dom/client';
import { QueryClient, QueryClientProvider } from '@tanstack/react-query';
import { BackupService } from '@backup-worker/client/browser';
import { BackupProvider, BackupSection, strings as S, useBackup } from '@backup-worker/react';

const TOKEN = 'bw_token';
const service = new BackupService({ getToken: () => sessionStorage.getItem(TOKEN) });
const queries = new QueryClient({ defaultOptions: { queries: { staleTime: 5000, refetchOnWindowFocus: false } } });

function SignIn({ onToken, error }: { onToken: (t: string) => void; error: string | null }) {
  const [text, setText] = useState('');
  return (
    <section id="signin" className="card">
      <h2>{S.signIn.title}</h2>
      <p>{S.signIn.intro}</p>
      <form id="signin-form" onSubmit={(e) => { e.preventDefault(); onToken(text.trim()); }}>
        <textarea id="token" rows={3} required placeholder="eyJhbGciOiJFUzI1NiIs..." value={text}
          onChange={(e) => setText(e.target.value)} />
        <button type="submit" id="signin-button">{S.signIn.button}</button>
      </form>
      {error && <p id="signin-error" className="error">{error}</p>}
    </section>
  );
}

/** The section once the token is accepted (GET /api/me); a refused token goes back to sign-in. */
function Signed({ onRefused, onSignOut }: { onRefused: (why: string) => void; onSignOut: () => void }) {
  const { me } = useBackup();
  if (me.isError) {
    queueMicrotask(() => onRefused(me.error instanceof Error ? me.error.message : String(me.error)));
    return null;
  }
  return <BackupSection onSignOut={onSignOut} />;
}

function Page() {
  const [token, setToken] = useState(() => sessionStorage.getItem(TOKEN));
  const [error, setError] = useState<string | null>(null);
  const signOut = (why: string | null) => {
    sessionStorage.removeItem(TOKEN);
    queries.clear();
    setToken(null);
    setError(why);
  };
  return (
    <main>
      <h1>Perfil</h1>
      {token ? (
        <Signed key={token} onRefused={(why) => signOut(why)} onSignOut={() => signOut(null)} />
      ) : (
        <SignIn error={error} onToken={(t) => { sessionStorage.setItem(TOKEN, t); setError(null); setToken(t); }} />
      )}
    </main>
  );
}

createRoot(document.getElementById('root')!).render(
  <QueryClientProvider client={queries}>
    <BackupProvider service={service}>
      <Page />
    </BackupProvider>
  </QueryClientProvider>,
);
