/**
 * What operators meet at the terminal and in cron (issue 26), with the real CLI on a real engine:
 * -o safety, option parsing, help, the final rendering of a failed run, selection.
 */
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { schemaChecked } from '../helpers/json-schema.js';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import {
  BIN,
  BUSYBOX,
  cleanup,
  docker,
  ENGINE_A,
  ENGINE_B,
  exists,
  ferry,
  inspect,
  removeSnapshots,
  uid,
  waitFor,
} from '../helpers/lab.js';

/**
 * Run ferry on a terminal (a tmux pane, 140 columns) until it exits; `during` runs while it does
 * (e.g. to send Ctrl-C). Returns the pane's text and the exit code.
 */
async function onTerminal(
  args: string[],
  during?: (session: string) => Promise<void>,
): Promise<{ screen: string; code: number }> {
  const session = uid('tty');
  const q = (a: string) => `'${a.replace(/'/g, `'\\''`)}'`;
  const cmd = `env DOCKER_HOST=${ENGINE_A} FERRY_PLAIN_OUTPUT= ${[BIN, ...args].map(q).join(' ')}; echo "EXIT=$?"; sleep 600`;
  execFileSync('tmux', ['new-session', '-d', '-s', session, '-x', '140', '-y', '40', cmd]);
  const capture = () => execFileSync('tmux', ['capture-pane', '-p', '-t', session], { encoding: 'utf8' });
  try {
    if (during) await during(session);
    await waitFor('ferry to exit', () => /EXIT=\d+/.test(capture()), 120_000);
    const screen = capture();
    return { screen, code: Number(/EXIT=(\d+)/.exec(screen)![1]) };
  } finally {
    execFileSync('tmux', ['kill-session', '-t', session]);
  }
}

const name = uid('cli');
let dir: string;

beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'ferry-cli-'));
  docker(['run', '-d', '--name', name, '-v', `${name}:/data`, BUSYBOX, 'sleep', '100000']);
  docker(['exec', name, 'sh', '-c', 'echo hello > /data/f']);
});

afterAll(() => {
  cleanup(ENGINE_A, { containers: [name], volumes: [name] });
  removeSnapshots([name]);
  rmSync(dir, { recursive: true, force: true });
});

describe('-o safety', () => {
  it('a missing directory is refused before anything is touched (exit 5); --mkdir creates it, never its parent', async () => {
    const unmounted = path.join(dir, 'mnt', 'usb');
    const r = await ferry(['backup', name, '-o', path.join(unmounted, 'ferry')]);
    expect(r.code).toBe(5);
    expect(r.stderr).toMatch(/^ferry: error: -o .*: no such directory/m);
    expect(r.stderr).toMatch(/--mkdir/);
    const m = await ferry(['backup', name, '-o', path.join(unmounted, 'ferry'), '--mkdir']);
    expect(m.code).toBe(5);
    expect(m.stderr).toMatch(/parent .*mnt\/usb does not exist/);
    expect(existsSync(path.join(dir, 'mnt'))).toBe(false);
    expect(inspect('container', name).State).toMatchObject({ Running: true, Paused: false });

    const store = path.join(dir, 'store');
    const ok = await ferry(['backup', name, '-o', store, '--mkdir']);
    expect(ok.code, ok.stderr).toBe(0);
    expect(statSync(store).mode & 0o777).toBe(0o700);
    expect(readdirSync(store).filter((f) => f.endsWith('.tar'))).toHaveLength(1);
  });

  it('an existing bundle file is not overwritten (exit 6) unless --force', async () => {
    const file = path.join(dir, 'web.tar');
    expect((await ferry(['backup', name, '-o', file])).code).toBe(0);
    const before = statSync(file);
    const again = await ferry(['--json', 'backup', name, '-o', file]);
    expect(again.code).toBe(6);
    expect(JSON.parse(again.stdout).error).toMatchObject({ code: 'CONFLICT', exitCode: 6 });
    expect(statSync(file).mtimeMs).toBe(before.mtimeMs);
    const forced = await ferry(['backup', name, '-o', file, '--force']);
    expect(forced.code, forced.stderr).toBe(0);
    expect(statSync(file).mtimeMs).toBeGreaterThan(before.mtimeMs);
    expect((await ferry(['verify', file])).code).toBe(0);
    const missingParent = await ferry(['backup', name, '-o', path.join(dir, 'nope', 'x.tar'), '--force']);
    expect(missingParent.code).toBe(5);
    expect(existsSync(path.join(dir, 'nope'))).toBe(false);
  });

  it('a codec suffix or a file where a directory is meant: usage errors (exit 2)', async () => {
    expect((await ferry(['backup', name, '-o', path.join(dir, 'web.tar.zst'), '--mkdir'])).code).toBe(2);
    expect(existsSync(path.join(dir, 'web.tar.zst'))).toBe(false);
    mkdirSync(path.join(dir, 'a-dir.tar'));
    expect((await ferry(['backup', name, '-o', path.join(dir, 'a-dir.tar')])).code).toBe(2);
  });
});

describe('option parsing', () => {
  it('a misspelt option is named with a suggestion, not reported as a missing -o; one prefix; exit 2', async () => {
    const r = await ferry(['backup', name, '--ouput', dir]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^ferry: error: unknown option '--ouput'/m);
    expect(r.stderr).toMatch(/Did you mean --output\?/);
    expect(r.stderr).not.toMatch(/required option/);
    expect(r.stderr).not.toMatch(/^error:/m);
    const c = await ferry(['backup', name, '-o', dir, '--compres', 'gzip']);
    expect(c.code).toBe(2);
    expect(c.stderr).toMatch(/^ferry: error: unknown option '--compres'/m);
    expect(c.stderr).toMatch(/Did you mean --compress\?/);
    const v = await ferry(['restore', 'x.tar', '--on-conflict', 'maybe']);
    expect(v.code).toBe(2);
    expect(v.stderr).toMatch(/^ferry: error: option '--on-conflict <policy>' argument 'maybe' is invalid/m);
    for (const x of [r, c, v]) expect(x.stderr).not.toMatch(/\n\s+at /);
  });
});

describe('help', () => {
  it("each command's --help lists the global options that work after it, and examples", async () => {
    for (const cmd of ['backup', 'restore', 'migrate', 'ls', 'inspect', 'verify', 'prune', 'drill']) {
      const r = await ferry([cmd, '--help']);
      expect(r.code, cmd).toBe(0);
      const global = r.stdout.slice(r.stdout.indexOf('Global Options:'));
      expect(r.stdout, cmd).toContain('Global Options:');
      for (const o of ['-H, --host', '--json', '-q, --quiet', '--passphrase-file']) expect(global, cmd).toContain(o);
      expect(r.stdout, cmd).toMatch(/Examples:\n {2}ferry /);
    }
    expect((await ferry(['verify', '--help'])).stdout).toMatch(/verify \[options\] <bundle\|store>/);
    // and they do work after it
    const ls = await ferry(['ls', path.join(dir, 'store'), '--json', '-q']);
    expect(JSON.parse(ls.stdout)).toMatchObject({ ok: true, command: 'ls' });
  });
});

describe('the final rendering on a terminal reflects how the run ended', () => {
  it('✔ after a backup that worked; ✖ and no ✔ after a missing container, a failed hook, Ctrl-C', async () => {
    const ok = await onTerminal(['backup', name, '-o', dir]);
    expect(ok.code, ok.screen).toBe(0);
    expect(ok.screen).toMatch(/✔ done/);

    const missing = await onTerminal(['backup', `${name}-nope`, '-o', dir]);
    expect(missing.code, missing.screen).toBe(5);
    expect(missing.screen).not.toContain('✔');
    expect(missing.screen).toMatch(/✖ .*failed\n(.*\n)*ferry: error: no such container/);

    const hook = await onTerminal(['backup', name, '-o', dir, '--pre-exec', 'exit 3']);
    expect(hook.code, hook.screen).toBe(10);
    expect(hook.screen).not.toContain('✔');
    expect(hook.screen).toContain('✖');

    const big = `${name}-big`;
    docker(['run', '-d', '--name', big, '-v', `${big}:/v`, BUSYBOX, 'sleep', '100000']);
    try {
      docker(['exec', big, 'sh', '-c', 'dd if=/dev/urandom of=/v/blob bs=1M count=300 2>/dev/null']);
      const stopped = await onTerminal(['backup', big, '-o', dir, '--compress', 'gzip'], async (session) => {
        await waitFor('the volume copy', () =>
          /volumes\//.test(execFileSync('tmux', ['capture-pane', '-p', '-t', session], { encoding: 'utf8' })),
        );
        execFileSync('tmux', ['send-keys', '-t', session, 'C-c']);
      });
      expect(stopped.code, stopped.screen).toBe(130);
      expect(stopped.screen).not.toContain('✔');
      expect(stopped.screen).toContain('✖');
      expect(inspect('container', big).State).toMatchObject({ Running: true, Paused: false });
    } finally {
      cleanup(ENGINE_A, { containers: [big], volumes: [big] });
      removeSnapshots([big]);
    }
  });
});

describe('progress against a known total', () => {
  it('the counter shows done/total, percentage, rate and ETA while a volume is read, and reaches 100%', async () => {
    const big = `${name}-prog`;
    docker(['run', '-d', '--name', big, '-v', `${big}:/v`, BUSYBOX, 'sleep', '100000']);
    try {
      docker(['exec', big, 'sh', '-c', 'dd if=/dev/urandom of=/v/blob bs=1M count=200 2>/dev/null']);
      const seen = new Set<string>();
      const r = await onTerminal(['backup', big, '-o', dir, '--compress', 'gzip'], async (session) => {
        // Every frame of the pane until ferry exits (the counter line is redrawn in place).
        for (let i = 0; i < 2400; i++) {
          const screen = execFileSync('tmux', ['capture-pane', '-p', '-t', session], { encoding: 'utf8' });
          for (const l of screen.split('\n')) if (/›/.test(l)) seen.add(l.trim());
          if (/EXIT=\d+/.test(screen)) break;
          await new Promise((res) => setTimeout(res, 50));
        }
      });
      expect(r.code, r.screen).toBe(0);
      const lines = [...seen];
      const volume = `volumes/${big}.tar.gz`;
      // The volume's archive, measured on the engine's host before it is read: 200 MiB of data
      // and its tar headers.
      expect(lines, lines.join('\n')).toContainEqual(
        expect.stringMatching(
          new RegExp(
            `› ${volume.replace(/\./g, '\\.')}: [\\d.]+ MiB / 200\\.0 MiB {2}\\d+% {2}[\\d.]+ MiB/s {2}ETA \\d+:\\d\\d$`,
          ),
        ),
      );
      expect(lines).toContainEqual(
        expect.stringMatching(new RegExp(`› ${volume.replace(/\./g, '\\.')}: 200\\.0 MiB / 200\\.0 MiB {2}100%`)),
      );
      expect(r.screen).toMatch(/✔ done/);
      // The summary: what moved, how much, how long, how fast.
      expect(r.screen).toMatch(/MOVED +BYTES +TIME +RATE/);
      expect(r.screen).toMatch(new RegExp(`${volume.replace(/\./g, '\\.')} +200\\.0 MiB +[\\d.]+s +[\\d.]+ MiB/s`));
      expect(r.screen).toMatch(/total +[\d.]+ MiB +[\d.]+s/);
    } finally {
      cleanup(ENGINE_A, { containers: [big], volumes: [big] });
      removeSnapshots([big]);
    }
  });
});

describe('migrate --dry-run', () => {
  it('says what would move where, with sizes, data paths and conflicts, and changes neither engine', async () => {
    const since = String(Math.floor(Date.now() / 1000));
    const r = await ferry(['--json', 'migrate', name, '--to', ENGINE_B, '--dry-run']);
    expect(r.code, r.stderr).toBe(0);
    const j: any = schemaChecked(r.stdout);
    expect(j).toMatchObject({ command: 'migrate', ok: true, dryRun: true, containers: [name], target: ENGINE_B });
    expect(j.plan.containers).toEqual([
      expect.objectContaining({ name, to: name, state: 'running', consistency: 'pause' }),
    ]);
    expect(j.plan.volumes).toEqual([
      expect.objectContaining({ name, to: name, exists: false, read: 'host-tar', write: 'host-tar' }),
    ]);
    expect(j.plan.volumes[0].rawBytes).toBeGreaterThan(0);
    expect(j.plan.conflicts).toEqual([]);
    const text = await ferry(['migrate', name, '--to', ENGINE_B, '--dry-run']);
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toMatch(/^dry run: nothing was paused, sent or created/);
    expect(text.stdout).toContain(`volume ${name} -> ${name}:`);
    // Nothing on the target, nothing paused on the source.
    expect(exists('container', name, ENGINE_B)).toBe(false);
    expect(exists('volume', name, ENGINE_B)).toBe(false);
    expect(
      docker(['events', '--since', since, '--until', '0s', '--filter', `container=${name}`, '--filter', 'event=pause']),
    ).toBe('');
    // A conflict is reported, not fatal, in a dry run.
    docker(['volume', 'create', name], { host: ENGINE_B });
    try {
      const c: any = schemaChecked((await ferry(['--json', 'migrate', name, '--to', ENGINE_B, '--dry-run'])).stdout);
      expect(c.ok).toBe(true);
      expect(c.plan.conflicts).toEqual([`volume ${name} exists on the target (--on-conflict fail)`]);
    } finally {
      cleanup(ENGINE_B, { volumes: [name] });
    }
  });
});

describe('selection: --all --filter and backup --dry-run', () => {
  it('the dry run lists what --all --filter would back up and touches nothing; the real run backs up exactly that', async () => {
    const tag = uid('sel');
    const a = `${tag}-a`;
    const b = `${tag}-b`;
    const other = `${tag}-other`;
    docker(['run', '-d', '--name', a, '--label', `ferry-test-sel=${tag}`, '-v', `${a}:/v`, BUSYBOX, 'sleep', '100000']);
    docker([
      'run',
      '-d',
      '--name',
      b,
      '--label',
      `ferry-test-sel=${tag}`,
      '--label',
      'ferry.consistency=stop',
      BUSYBOX,
      'sleep',
      '100000',
    ]);
    docker(['run', '-d', '--name', other, '--label', 'ferry-test-sel=nope', BUSYBOX, 'sleep', '100000']);
    const store = path.join(dir, 'selected');
    mkdirSync(store);
    try {
      const dry = await ferry([
        '--json',
        'backup',
        '--all',
        '--filter',
        `label=ferry-test-sel=${tag}`,
        '-o',
        store,
        '--dry-run',
      ]);
      expect(dry.code, dry.stderr).toBe(0);
      const plan = JSON.parse(dry.stdout);
      expect(plan).toMatchObject({ command: 'backup', ok: true, dryRun: true });
      expect([...plan.containers].sort()).toEqual([a, b]);
      const byName = Object.fromEntries(plan.plan.flatMap((x: any) => x.containers).map((c: any) => [c.name, c]));
      expect(byName[a]).toMatchObject({ state: 'running', consistency: 'pause', volumes: [a] });
      expect(byName[b]).toMatchObject({ consistency: 'stop', volumes: [] });
      expect(readdirSync(store)).toEqual([]);
      const text = await ferry(['backup', '--all', '--filter', `name=${tag}-?`, '-o', store, '--dry-run']);
      expect(text.code, text.stderr).toBe(0);
      expect(text.stdout).toMatch(/^dry run: nothing was paused, read or written/);
      expect(text.stdout).toContain(`bundle of ${a}`);
      expect(text.stdout).toContain(`volume ${a}`);
      expect(text.stdout).not.toContain(other);
      expect(readdirSync(store)).toEqual([]);

      const real = await ferry(['--json', 'backup', '--all', '--filter', `label=ferry-test-sel=${tag}`, '-o', store]);
      expect(real.code, real.stderr).toBe(0);
      expect(
        JSON.parse(real.stdout)
          .results.map((r: any) => r.container)
          .sort(),
      ).toEqual([a, b]);
      expect(readdirSync(store).sort()).toEqual([
        expect.stringMatching(`^ferry-${a}-`),
        expect.stringMatching(`^ferry-${b}-`),
      ]);

      const none = await ferry(['backup', '--all', '--filter', `label=ferry-test-sel=${tag}-none`, '-o', store]);
      expect(none.code).toBe(5);
      const without = await ferry(['backup', a, '--filter', 'label=x', '-o', store]);
      expect(without.code).toBe(2);
      const bad = await ferry(['backup', '--all', '--filter', 'colour=red', '-o', store]);
      expect(bad.code).toBe(2);
      expect(bad.stderr).toMatch(/label=<key>/);
    } finally {
      cleanup(ENGINE_A, { containers: [a, b, other], volumes: [a] });
      removeSnapshots([a, b]);
    }
  });
});
