// Where the shared fixtures live, and the ISAs this CPU can run.
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const projectRoot = root;
export const fixturesDir = process.env['LAMINATE_FIXTURES'] ?? join(root, '../shared/fixtures');
export const haveFixtures = existsSync(join(fixturesDir, 'models/reference_generations.json'));
export const fixturesSkipReason = `shared fixtures not found at ${fixturesDir} (set LAMINATE_FIXTURES)`;
