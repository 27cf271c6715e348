// The tests' data files, all inside the repository (provenance and licences: test/data/README.md):
// the stories260K GGUFs and the 32000-token Llama 2 vocabulary under test/data/models, the
// llama2.c / llama.cpp reference outputs under test/data/golden, and the demo's embedded
// models/stories260K-q8_0.gguf (one copy, used by the tests too). A missing file throws, naming
// it, so a test without its data fails instead of skipping.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const DATA = path.join(ROOT, 'test', 'data');

/** The file under the repository root, which must exist. */
function dataFile(...parts: string[]): string {
  const file = path.join(ROOT, ...parts);
  if (!fs.statSync(file, { throwIfNoEntry: false })?.isFile()) {
    throw new Error(`test data file not found: ${file} (see test/data/README.md)`);
  }
  return file;
}

/** A model file: test/data/models/<name>, or models/<name> for the embedded demo model. */
export function modelFile(name: string): string {
  return name === 'stories260K-q8_0.gguf' ? dataFile('models', name) : dataFile('test', 'data', 'models', name);
}

/** A reference output under test/data/golden. */
export function goldenFile(name: string): string {
  return dataFile('test', 'data', 'golden', name);
}

export const STORIES = modelFile('stories260K.gguf');
export const LLAMA2_VOCAB = modelFile('llama2-vocab.gguf');
