/// <reference types="vitest/config" />
import { existsSync, readFileSync } from 'node:fs';
import { defineConfig, type Plugin } from 'vite';

// `npm run dev` proxies /api and /ws to this idsync (and its CORS then never matters).
const idsync = process.env.IDSYNC_URL ?? 'http://127.0.0.1:8080';

/**
 * The app reads /config.json at start; a build never contains one (one build serves every
 * deployment; the static server mounts the file). In development this serves
 * `frontend/config.json` when present, else config.example.json with `apiBaseUrl: ""`
 * (same origin: through the proxy above).
 */
function devConfigJson(): Plugin {
  return {
    name: 'idsync-dev-config-json',
    apply: 'serve',
    configureServer(server) {
      server.middlewares.use('/config.json', (_req, res) => {
        const body = existsSync('config.json')
          ? readFileSync('config.json', 'utf8')
          : JSON.stringify({ ...JSON.parse(readFileSync('config.example.json', 'utf8')), apiBaseUrl: '' });
        res.setHeader('content-type', 'application/json');
        res.setHeader('cache-control', 'no-store');
        res.end(body);
      });
    },
  };
}

export default defineConfig({
  plugins: [devConfigJson()],
  oxc: { jsx: { runtime: 'automatic', importSource: 'preact' } },
  server: {
    port: 3000,
    strictPort: true,
    proxy: {
      '/api': { target: idsync, changeOrigin: true },
      '/ws': { target: idsync, ws: true, changeOrigin: true },
    },
  },
  preview: { port: 3000, strictPort: true },
  build: {
    target: 'es2022',
    // No polyfill: every browser that runs ES2022 modules supports modulepreload.
    modulePreload: { polyfill: false },
    sourcemap: true,
    assetsInlineLimit: 0,
  },
  test: {
    include: ['src/**/*.test.{ts,tsx}'],
    environment: 'node',
  },
});
