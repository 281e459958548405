/** `ferry completion bash|zsh|fish`: generated from the program; the bash script loads in bash and completes. */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { afterAll, describe, expect, it } from 'vitest';
import { main } from '../../src/cli/main.js';
import { COMMAND_NAMES, createProgram, type Deps } from '../../src/cli/program.js';
import { bashScript, fishScript, zshScript } from '../../src/cli/completion.js';
import { schemaChecked } from '../helpers/json-schema.js';

process.setMaxListeners(100);
const program = createProgram({} as Deps);
const dir = mkdtempSync(path.join(tmpdir(), 'ferry-completion-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** What bash completes for the words typed so far (the last one being completed). */
function complete(script: string, words: string[]): string[] {
  const file = path.join(dir, 'ferry.bash');
  writeFileSync(file, script);
  const r = spawnSync(
    'bash',
    [
      '-c',
      `source ${file}; COMP_WORDS=(${words.map((w) => `'${w}'`).join(' ')}); COMP_CWORD=${words.length - 1}; cd ${dir}; _ferry; printf '%s\\n' "\${COMPREPLY[@]}"`,
    ],
    { encoding: 'utf8' },
  );
  expect(r.status, r.stderr).toBe(0);
  return r.stdout.split('\n').filter(Boolean).sort();
}

describe('completion', () => {
  const bash = bashScript(program);

  it('the bash script names every command and every option of each', () => {
    for (const name of COMMAND_NAMES) expect(bash).toMatch(new RegExp(`\\b${name}\\) opts='`));
    for (const c of program.commands)
      for (const o of c.options) expect(bash, `${c.name()} ${o.long}`).toContain(o.long!);
    for (const o of program.options) if (o.long) expect(bash).toContain(o.long);
  });

  it('is valid bash, registers for ferry, and completes commands, options and values', () => {
    const file = path.join(dir, 'check.bash');
    writeFileSync(file, bash);
    const n = spawnSync('bash', ['-n', file], { encoding: 'utf8' });
    expect(n.status, n.stderr).toBe(0);
    const p = spawnSync('bash', ['-c', `source ${file} && complete -p ferry`], { encoding: 'utf8' });
    expect(p.status, p.stderr).toBe(0);
    expect(p.stdout.trim()).toMatch(/^complete (-o \w+ )*-F _ferry ferry$/);
    expect(complete(bash, ['ferry', ''])).toEqual([...COMMAND_NAMES].sort());
    expect(complete(bash, ['ferry', 'c'])).toEqual(['cat', 'clean', 'completion', 'config']);
    expect(complete(bash, ['ferry', 'clean', '--'])).toEqual(
      expect.arrayContaining(['--dry-run', '--min-age', '--json', '--host']),
    );
    expect(complete(bash, ['ferry', 'clean', '--'])).not.toContain('--keep-daily');
    expect(complete(bash, ['ferry', '--json', 'prune', '/b', '--keep-d'])).toEqual(['--keep-daily']);
    expect(complete(bash, ['ferry', 'completion', ''])).toEqual(['bash', 'fish', 'zsh']);
    writeFileSync(path.join(dir, 'web.tar'), '');
    expect(complete(bash, ['ferry', 'inspect', 'we'])).toEqual(['web.tar']);
    expect(complete(bash, ['ferry', 'cat', 'web.tar', 'v:/x', '-o', 'we'])).toEqual(['web.tar']);
  });

  it('zsh loads the same function through bashcompinit; fish has a line per command and option', () => {
    const zsh = zshScript(program);
    expect(zsh.split('\n')[0]).toBe('#compdef ferry');
    expect(zsh).toContain('bashcompinit');
    expect(zsh).toContain('complete -o default -o bashdefault -F _ferry ferry');
    const fish = fishScript(program);
    for (const c of program.commands) {
      expect(fish).toContain(`-n '__fish_use_subcommand' -a ${c.name()} `);
      for (const o of c.options)
        expect(fish, `${c.name()} ${o.long}`).toContain(
          `-n '__fish_seen_subcommand_from ${c.name()}' -l ${o.long!.slice(2)}`,
        );
    }
    // descriptions are quoted safely: balanced quotes on every line once '\'' escapes are taken out
    for (const l of fish.split('\n')) expect(l.replace(/'\\''/g, '').split("'").length % 2, l).toBe(1);
    expect(fish).toContain(`'\\''`); // there is an apostrophe to escape (ferry's)
  });

  it('through the CLI: the script on stdout, --json as one object, an unknown shell exit 2', async () => {
    const run = async (...args: string[]) => {
      const stdout = new PassThrough();
      const stderr = new PassThrough();
      let out = '';
      stdout.on('data', (c) => (out += c));
      const code = await main(['node', 'ferry', ...args], {
        stdout: stdout as unknown as NodeJS.WriteStream,
        stderr: stderr as unknown as NodeJS.WriteStream,
      });
      return { code, out };
    };
    const b = await run('completion', 'bash');
    expect(b.code).toBe(0);
    expect(b.out).toBe(bash);
    const j = await run('--json', 'completion', 'fish');
    expect(schemaChecked(j.out)).toMatchObject({ command: 'completion', ok: true, shell: 'fish' });
    const bad = await run('--json', 'completion', 'tcsh');
    expect(bad.code).toBe(2);
    expect(schemaChecked(bad.out)).toMatchObject({ command: 'completion', ok: false, error: { exitCode: 2 } });
  });
});
