// The TypeScript declarations: tsc checks the JS against its JSDoc and generates
// types/ from it; the committed types/ must be exactly what it generates (run
// `npm run types` after changing the JSDoc), and test/types/usage.ts, the public
// API as a strict TypeScript user writes it, must compile against them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const ROOT = dirname(dirname(fileURLToPath(import.meta.url)));
const TSC = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');

async function tsc(...args) {
  try {
    await promisify(execFile)(process.execPath, [TSC, ...args], { cwd: ROOT, timeout: 60000 });
  } catch (err) {
    assert.fail(`tsc ${args.join(' ')} failed:\n${err.stdout}${err.stderr}`);
  }
}

async function files(dir) {
  const out = new Map();
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const path = join(entry.parentPath ?? entry.path, entry.name);
    out.set(relative(dir, path), await readFile(path, 'utf8'));
  }
  return out;
}

test('types/ is what tsc generates from the JSDoc, and the JS type-checks', async (t) => {
  const out = await mkdtemp(join(tmpdir(), 'pgcast-types-'));
  t.after(() => rm(out, { recursive: true, force: true }));
  await tsc('-p', '.', '--outDir', out);
  const generated = await files(out);
  const committed = await files(join(ROOT, 'types'));
  assert.deepEqual([...committed.keys()].sort(), [...generated.keys()].sort(), 'run `npm run types` and commit types/');
  for (const [name, text] of generated) assert.equal(committed.get(name), text, `types/${name} is stale: run \`npm run types\``);
});

test('the public API compiles for a strict TypeScript user', async () => {
  await tsc('-p', 'test/types');
});
