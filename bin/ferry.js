#!/usr/bin/env -S node --max-semi-space-size=2
// --max-semi-space-size=2: V8's young generation stays at 2 MiB semi-spaces instead of growing to
// 16 MiB (a default sized for request/response servers). ferry streams gigabytes through small
// short-lived buffers and objects: the larger young generation only kept them alive longer, more
// memory resident for no speed (docs/performance.md, A small young generation).
// The flag applies when this file is run as a program (`ferry`, `./bin/ferry.js`, an npm or
// /usr/local/bin link); `node bin/ferry.js` skips it unless given: node --max-semi-space-size=2 bin/ferry.js.
import { main } from '../dist/cli/main.js';

const code = await main(process.argv);
process.exitCode = code;
// Everything ferry started has finished or been torn down by now; a socket that the engine or an
// SSH peer left half-open must not keep a finished run alive (cron would wait on it forever).
setTimeout(() => process.exit(code), 200).unref();
