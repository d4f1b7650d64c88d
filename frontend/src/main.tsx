import { render } from 'preact';
import { App } from './app';
import { Auth } from './auth';
import { ConfigError, loadConfig } from './config';
import './styles.css';

function ConfigProblem({ problems }: { problems: string[] }) {
  return (
    <main id="main">
      <section>
        <h1>This page is not configured correctly</h1>
        <p>
          The app reads <code>/config.json</code> when it starts, and it could not use it:
        </p>
        <ul>
          {problems.map((p) => (
            <li key={p}>{p}</li>
          ))}
        </ul>
        <p class="muted">An operator fixes this; see config.example.json next to the app.</p>
      </section>
    </main>
  );
}

async function main(): Promise<void> {
  const root = document.getElementById('app');
  if (!root) return;
  let config;
  try {
    config = await loadConfig();
  } catch (err) {
    render(<ConfigProblem problems={err instanceof ConfigError ? err.problems : [String(err)]} />, root);
    return;
  }
  const auth = new Auth(config);
  const { returnTo, error } = await auth.init();
  if (returnTo && /^#\/[\w/-]*$/.test(returnTo)) {
    window.history.replaceState(null, '', `${window.location.pathname}${returnTo}`);
  }
  render(<App config={config} auth={auth} initialError={error} />, root);
}

void main();
