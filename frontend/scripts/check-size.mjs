// After `vite build`: the bundle budget and the CSP rules the static server relies on.
//   - all JavaScript loaded by index.html, gzipped (zlib level 9), under 150 KB;
//   - index.html has no inline script, no inline style, no event-handler attribute
//     (the production CSP forbids them: script-src 'self', style-src 'self');
//   - dist/ holds no config.json (each deployment mounts its own; one build serves all).
import { readdirSync, readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';

const BUDGET = 150 * 1024;
const dist = new URL('../dist/', import.meta.url).pathname;
const problems = [];

const html = readFileSync(join(dist, 'index.html'), 'utf8');
for (const m of html.matchAll(/<script\b([^>]*)>([\s\S]*?)<\/script>/gi)) {
  if (!/\bsrc=/.test(m[1] ?? '') || (m[2] ?? '').trim() !== '') problems.push(`inline <script> in index.html: ${m[0].slice(0, 80)}`);
}
if (/<style\b/i.test(html)) problems.push('inline <style> in index.html');
if (/\sstyle=/i.test(html)) problems.push('style="" attribute in index.html');
if (/\son[a-z]+=/i.test(html)) problems.push('event-handler attribute in index.html');
if (existsSync(join(dist, 'config.json'))) problems.push('dist/config.json exists: the build must not carry a deployment\'s settings');

const files = readdirSync(join(dist, 'assets'));
let js = 0;
let jsRaw = 0;
let css = 0;
for (const f of files) {
  const body = readFileSync(join(dist, 'assets', f));
  if (f.endsWith('.js')) {
    js += gzipSync(body, { level: 9 }).length;
    jsRaw += body.length;
  } else if (f.endsWith('.css')) {
    css += gzipSync(body, { level: 9 }).length;
  }
}
const kb = (n) => `${(n / 1024).toFixed(1)} KB`;
console.log(`bundle: JavaScript ${kb(js)} gzipped (${kb(jsRaw)} raw), CSS ${kb(css)} gzipped; budget ${kb(BUDGET)} of JavaScript`);
if (js > BUDGET) problems.push(`JavaScript is ${kb(js)} gzipped, over the ${kb(BUDGET)} budget`);
if (problems.length) {
  for (const p of problems) console.error(`check-size: ${p}`);
  process.exit(1);
}
console.log('check-size: ok (no inline script or style, no config.json in dist/)');
