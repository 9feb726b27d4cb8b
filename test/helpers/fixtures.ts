// Where the fixtures live, and the ISAs this CPU can run.
//
// The full fixture folder is ../shared/fixtures (LAMINATE_FIXTURES names another). Without
// it, test/fixtures holds a copy of its small files (the Mistral v0.3 tokenizer, the chat and
// tokenization references, the reference generations), and `python3 test/fixtures/make_variants.py`
// writes the model variants there from the bundled demo model. Fixture tests skip with a
// reason when neither is complete; under CI (the CI variable set) they fail instead.
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const projectRoot = root;

const complete = (dir: string) =>
  ['models/reference_generations.json', 'models/tiny-mistral-f32/model.safetensors', 'mistral-7b-instruct-v0.3/tokenizer.json', 'chat', 'tokenization'].every((f) =>
    existsSync(join(dir, f)),
  );
const shared = join(root, '../shared/fixtures');
const bundled = join(root, 'test/fixtures');

export const fixturesDir = process.env['LAMINATE_FIXTURES'] ?? (complete(shared) ? shared : bundled);
export const haveFixtures = complete(fixturesDir);
export const fixturesSkipReason = `fixtures not found at ${fixturesDir} (set LAMINATE_FIXTURES, or run python3 test/fixtures/make_variants.py)`;

if (!haveFixtures && process.env['CI']) throw new Error(`CI runs every fixture test: ${fixturesSkipReason}`);
