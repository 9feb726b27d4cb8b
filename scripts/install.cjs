// The package's install script. A prebuilt binary in prebuilds/<platform>-<arch>/ that
// matches this machine (node-gyp-build's rules: platform, architecture, glibc or musl) and
// loads is used as it is. Otherwise, or with --build-from-source (npm_config_build_from_source),
// the addon is built from source with node-gyp, after checking that what that needs is on
// the PATH: when something is missing, the error names it and how to install it, instead of
// a compiler error from deep inside node-gyp.
'use strict';
const { spawnSync } = require('node:child_process');
const { existsSync } = require('node:fs');
const { delimiter, join } = require('node:path');

const root = join(__dirname, '..');
const target = `${process.platform}-${process.arch}`;
const fromSource = /^(1|true)$/i.test(process.env.npm_config_build_from_source || '');

function prebuilt() {
  const load = require('node-gyp-build');
  let file;
  try {
    file = load.path(root);
  } catch {
    return `no prebuilt binary matches ${target}${libc()}`;
  }
  try {
    require(file);
    return '';
  } catch (e) {
    return `the prebuilt binary ${file} does not load here (${e.message.split('\n')[0]})`;
  }
}

function libc() {
  if (process.platform !== 'linux') return '';
  const report = process.report && process.report.getReport();
  return report && report.header && report.header.glibcVersionRuntime ? ` (glibc ${report.header.glibcVersionRuntime})` : ' (musl)';
}

function onPath(names) {
  const dirs = (process.env.PATH || '').split(delimiter).filter(Boolean);
  const exts = process.platform === 'win32' ? (process.env.PATHEXT || '.EXE;.CMD;.BAT').split(';') : [''];
  return names.find((name) => dirs.some((d) => exts.some((e) => existsSync(join(d, name + e)))));
}

// What node-gyp needs: Python 3, and (outside Windows, where it finds Visual Studio itself)
// make and a C++17 compiler.
function missingTools() {
  const missing = [];
  if (!process.env.npm_config_python && !process.env.PYTHON && !onPath(['python3', 'python'])) missing.push('python3');
  if (process.platform !== 'win32') {
    if (!onPath(['make', 'gmake'])) missing.push('make');
    if (!(process.env.CXX && onPath([process.env.CXX.split(' ')[0]])) && !onPath(['c++', 'g++', 'clang++'])) missing.push('a C++ compiler (c++, g++ or clang++)');
  }
  return missing;
}

const HINTS = {
  linux: 'Debian/Ubuntu: apt-get install python3 make g++; Alpine: apk add python3 make g++; Fedora/RHEL: dnf install python3 make gcc-c++',
  darwin: 'xcode-select --install',
  win32: 'install Python 3 and Visual Studio Build Tools with the "Desktop development with C++" workload',
};

const why = fromSource ? 'building from source was asked for (--build-from-source)' : prebuilt();
if (!why) process.exit(0);

const missing = missingTools();
if (missing.length > 0) {
  console.error(
    `laminate: ${why}, and building it from source needs ${missing.join(', ')}, not found on the PATH.\n` +
      `  Install ${missing.length > 1 ? 'them' : 'it'} (${HINTS[process.platform] || 'see https://github.com/nodejs/node-gyp#installation'}) and run npm rebuild laminate,\n` +
      '  or install on a platform with a prebuilt binary: linux-x64 and linux-arm64 (glibc 2.28 or newer), darwin-x64, darwin-arm64, win32-x64.',
  );
  process.exit(1);
}

console.error(`laminate: ${why}; building the addon from source with node-gyp`);
let gyp = process.env.npm_config_node_gyp;
if (!gyp) {
  try {
    gyp = require.resolve('node-gyp/bin/node-gyp.js');
  } catch {
    console.error('laminate: node-gyp not found (npm provides it to install scripts; else npm install -g node-gyp)');
    process.exit(1);
  }
}
const build = spawnSync(process.execPath, [gyp, 'rebuild'], { cwd: root, stdio: 'inherit' });
process.exit(build.status === null ? 1 : build.status);
