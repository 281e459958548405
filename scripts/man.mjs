#!/usr/bin/env node
// Writes docs/ferry.1 from the built program (dist/): run by `npm run man` after a build.
import { writeFileSync } from 'node:fs';
import { createProgram } from '../dist/cli/program.js';
import { manPage } from '../dist/cli/manpage.js';

writeFileSync(new URL('../docs/ferry.1', import.meta.url), manPage(createProgram({})));
