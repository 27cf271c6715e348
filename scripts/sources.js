#!/usr/bin/env node
// Prints the source files of the named groups of native/sources.json, space separated
// (binding.gyp expands this with <!@(...); CMakeLists.txt reads the JSON itself).
'use strict';
const path = require('node:path');
const list = require(path.join(__dirname, '..', 'native', 'sources.json'));
const groups = process.argv.slice(2);
const files = groups.flatMap((g) => {
  if (!Array.isArray(list[g])) throw new Error(`native/sources.json has no group "${g}"`);
  return list[g];
});
process.stdout.write(files.join(' '));
