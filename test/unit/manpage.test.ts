/** ferry(1): generated from the program, committed as docs/ferry.1, current, and a page man renders. */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { COMMAND_NAMES, createProgram, type Deps } from '../../src/cli/program.js';
import { manPage, roffText } from '../../src/cli/manpage.js';

const program = createProgram({} as Deps);
const page = manPage(program);
const committed = new URL('../../docs/ferry.1', import.meta.url);

/** The first of man, groff, mandoc that is installed, as a renderer of a page file to plain text. */
function renderer(): ((file: string) => { text: string; warnings: string }) | undefined {
  const has = (cmd: string) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
  const env = { ...process.env, MANWIDTH: '200', COLUMNS: '200', LC_ALL: 'C.UTF-8', MANPAGER: 'cat', PAGER: 'cat' };
  const run = (cmd: string, args: string[]) => {
    const r = spawnSync(cmd, args, { encoding: 'utf8', env });
    expect(r.status, `${cmd}: ${r.stderr}`).toBe(0);
    return { text: r.stdout.replace(/.\x08/g, ''), warnings: r.stderr };
  };
  if (has('man')) return (file) => run('man', ['--warnings', '-l', file]);
  if (has('groff')) return (file) => run('groff', ['-man', '-ww', '-Tutf8', '-rLL=200n', file]);
  if (has('mandoc')) return (file) => run('mandoc', ['-Wwarning', '-Tutf8', file]);
  return undefined;
}

describe('man page', () => {
  it('docs/ferry.1 is what the generator gives now (run `npm run man` after changing a command)', () => {
    expect(readFileSync(committed, 'utf8')).toBe(page);
  });

  it('has every command, every option and the examples of each --help', () => {
    for (const name of COMMAND_NAMES) expect(page).toMatch(new RegExp(`^\\.SS "ferry ${name} `, 'm'));
    for (const o of program.options) expect(page).toContain(`.B ${roffText(o.flags)}`);
    for (const c of program.commands) {
      for (const o of c.options.filter((x) => !x.hidden)) expect(page, c.name()).toContain(`.B ${roffText(o.flags)}`);
    }
    expect(page).toContain(roffText('ferry backup --all --filter label=backup=nightly -o /backups --dry-run'));
    expect(page).toMatch(/^\.SH EXIT STATUS$/m);
  });

  it('is well-formed roff: a title first, and no text line that roff would take as a request', () => {
    const lines = page.split('\n');
    expect(lines[1]).toMatch(/^\.TH FERRY 1 /);
    const macros = new Set(['TH', 'SH', 'SS', 'TP', 'PP', 'RS', 'RE', 'B', 'I', 'BR', 'nf', 'fi']);
    for (const l of lines.slice(1)) {
      if (!/^[.']/.test(l)) continue;
      expect(macros, l).toContain(/^[.'](\w+)/.exec(l)?.[1]);
    }
    // .nf and .RS blocks are closed
    expect(lines.filter((l) => l === '.nf').length).toBe(lines.filter((l) => l === '.fi').length);
    expect(lines.filter((l) => l.startsWith('.RS')).length).toBe(lines.filter((l) => l === '.RE').length);
  });

  const render = renderer();
  it.skipIf(!render)('renders without warnings, with each command and example', () => {
    const { text, warnings } = render!(committed.pathname);
    expect(warnings.trim()).toBe('');
    expect(text).toMatch(/^FERRY\(1\)/);
    for (const name of COMMAND_NAMES) expect(text).toContain(`ferry ${name} [options]`);
    expect(text).toContain('ferry backup --all --filter label=backup=nightly -o /backups --dry-run');
    expect(text).toContain('--passphrase-file <file>');
  });
});
