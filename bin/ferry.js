#!/usr/bin/env node
import { main } from '../dist/cli/main.js';

const code = await main(process.argv);
process.exitCode = code;
// Everything ferry started has finished or been torn down by now; a socket that the engine or an
// SSH peer left half-open must not keep a finished run alive (cron would wait on it forever).
setTimeout(() => process.exit(code), 200).unref();
