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
      // ✖ names the step it was stopped at (the volume), not the resume that followed.
      expect(stopped.screen).toMatch(new RegExp(`✖ volume ${big} -> volumes/`));
      expect(inspect('container', big).State).toMatchObject({ Running: true, Paused: false });
    } finally {
      cleanup(ENGINE_A, { containers: [big], volumes: [big] });
      removeSnapshots([big]);
    }
  });
});

/** Every live line (a counter, ›, or what is paused) that the pane showed until ferry exited (redrawn in place). */
function counterLines(seen: Set<string>): (session: string) => Promise<void> {
  return async (session) => {
    for (let i = 0; i < 2400; i++) {
      const screen = execFileSync('tmux', ['capture-pane', '-p', '-t', session], { encoding: 'utf8' });
      for (const l of screen.split('\n')) if (/›|^ *paused: /.test(l)) seen.add(l.trim());
      if (/EXIT=\d+/.test(screen)) break;
      await new Promise((res) => setTimeout(res, 50));
    }
  };
}

describe('progress against a known total', () => {
  it('the counter shows done/total, percentage, rate and ETA while a volume is read, and reaches 100%', async () => {
    const big = `${name}-prog`;
    docker(['run', '-d', '--name', big, '-v', `${big}:/v`, BUSYBOX, 'sleep', '100000']);
    try {
      docker(['exec', big, 'sh', '-c', 'dd if=/dev/urandom of=/v/blob bs=1M count=200 2>/dev/null']);
      const seen = new Set<string>();
      const r = await onTerminal(['backup', big, '-o', dir, '--compress', 'gzip'], counterLines(seen));
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
      // While the volume is read, a line names the container that is paused, and for how long.
      expect(lines).toContainEqual(expect.stringMatching(new RegExp(`^paused: ${big} \\(\\d+:\\d\\d\\)$`)));
      expect(r.screen).toMatch(/✔ done/);
      // The summary: what moved, how much, how long, how fast, by which path; how long it was paused.
      expect(r.screen).toMatch(/MOVED +BYTES +TIME +RATE +PATH/);
      expect(r.screen).toMatch(new RegExp(`^ {2}${big} paused [\\d.]+s$`, 'm'));
      expect(r.screen).toMatch(new RegExp(`${volume.replace(/\./g, '\\.')} +200\\.0 MiB +[\\d.]+s +[\\d.]+ MiB/s`));
      expect(r.screen).toMatch(/total +[\d.]+ MiB +[\d.]+s/);
    } finally {
      cleanup(ENGINE_A, { containers: [big], volumes: [big] });
      removeSnapshots([big]);
    }
  });
});

describe('migrate progress on a terminal', () => {
  it('counts the volume against its size (percentage, rate, ETA), ends on the summary; ✖ on a failed run', async () => {
    const m = `${name}-mig`;
    docker(['run', '-d', '--name', m, '-v', `${m}:/v`, BUSYBOX, 'sleep', '100000']);
    try {
      // 400 MiB: long enough on any host for frames between the first rate and the end.
      docker(['exec', m, 'sh', '-c', 'dd if=/dev/zero of=/v/blob bs=1M count=400 2>/dev/null']);
      const seen = new Set<string>();
      const r = await onTerminal(['migrate', m, '--to', ENGINE_B], counterLines(seen));
      expect(r.code, r.screen).toBe(0);
      const lines = [...seen];
      // The volume (its pre-copy's first pass, or the whole copy) against its size, measured first.
      const vol = `volume ${m}( \\(pass 1\\))?`;
      expect(lines, lines.join('\n')).toContainEqual(
        expect.stringMatching(
          new RegExp(`› ${vol}: [\\d.]+ MiB / 400\\.0 MiB {2}\\d+% {2}[\\d.]+ MiB/s {2}ETA \\d+:\\d\\d$`),
        ),
      );
      expect(lines).toContainEqual(expect.stringMatching(new RegExp(`› ${vol}: 400\\.0 MiB / 400\\.0 MiB {2}100%`)));
      expect(r.screen).toMatch(/✔ done/);
      expect(r.screen).not.toContain('✖');
      // The summary: each stream with its bytes, time, rate and data path (source -> target); the pause.
      expect(r.screen).toMatch(/MOVED +BYTES +TIME +RATE +PATH/);
      expect(r.screen).toMatch(new RegExp(`${vol} +400\\.0 MiB +[\\d.]+s +[\\d.]+ MiB/s +[a-z-]+ -> [a-z-]+`));
      expect(r.screen).toMatch(new RegExp(`image ferry/${m}:\\S+ +[\\d.]+ (B|KiB|MiB) .*[a-z-]+ -> [a-z-]+`));
      expect(r.screen).toMatch(new RegExp(`^ {2}${m} paused [\\d.]+s$`, 'm'));
      // and the data arrived
      expect(docker(['run', '--rm', '-v', `${m}:/v`, BUSYBOX, 'stat', '-c', '%s', '/v/blob'], { host: ENGINE_B })).toBe(
        String(400 * 1024 * 1024),
      );

      const missing = await onTerminal(['migrate', `${m}-nope`, '--to', ENGINE_B]);
      expect(missing.code, missing.screen).toBe(5);
      expect(missing.screen).not.toContain('✔');
      expect(missing.screen).toMatch(/✖ .*failed\n(.*\n)*ferry: error: no such container/);
    } finally {
      cleanup(ENGINE_A, { containers: [m], volumes: [m] });
      cleanup(ENGINE_B, { containers: [m], volumes: [m] });
      removeSnapshots([m]);
    }
  });
});

describe('progress off a terminal', () => {
  const bytes = '[\\d.]+ (B|KiB|MiB)';
  it('is a line per step, then a line per stream with its figures, then one summary line', async () => {
    const r = await ferry(['backup', name, '-o', dir]);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stderr.trimEnd().split('\n');
    // Plain lines only: no spinner, no cursor movement.
    expect(r.stderr).not.toMatch(/\x1b|\r|[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏✔✖]/);
    for (const l of lines) expect(l).toMatch(/^ferry: /);
    const volume = `volumes/${name}\\.tar\\.zst`;
    const step = lines.findIndex((l) => new RegExp(`^ferry: volume ${name} -> ${volume}$`).test(l));
    expect(step, r.stderr).toBeGreaterThanOrEqual(0);
    // Each stream: bytes (of its size, with a percentage: the image's is inspected before it is
    // read; a volume's is measured meanwhile, too late for one this small), time, rate, data path.
    const figures = (label: string, total: string) =>
      new RegExp(`^ferry: ${label}: ${bytes}${total} {2}in [\\d.]+s( {2}${bytes}/s)? {2}via [a-z-]+$`);
    const stream = lines.findIndex((l) => figures(volume, `( / ${bytes} {2}\\d+%)?`).test(l));
    expect(stream, r.stderr).toBeGreaterThan(step);
    expect(lines).toContainEqual(expect.stringMatching(figures(`images/${name}\\.tar\\.gz`, ` / ${bytes} {2}\\d+%`)));
    // The last line sums the run up: its time, what moved in how many streams, how long it was paused.
    expect(lines.at(-1)).toMatch(
      new RegExp(`^ferry: done in [\\d.]+s: ${bytes} moved in 2 streams( \\(${bytes}/s\\))?; ${name} paused [\\d.]+s$`),
    );
    expect(r.stdout).toMatch(new RegExp(`^backed up ${name} `));

    // verify counts each member against its size before compression, from the manifest.
    const bundle = /to (\S+\.tar):/.exec(r.stdout)![1]!;
    const v = await ferry(['verify', bundle]);
    expect(v.code, v.stderr).toBe(0);
    expect(v.stderr).toMatch(new RegExp(`^ferry: ${volume}: (${bytes}) / \\1 {2}100% {2}in [\\d.]+s`, 'm'));
    expect(v.stderr.trimEnd().split('\n').at(-1)).toMatch(new RegExp(`^ferry: done in [\\d.]+s: ${bytes} moved`));
  });

  it('a failed run ends with the step it failed at, then the error; never a summary of success', async () => {
    const r = await ferry(['backup', name, '-o', dir, '--pre-exec', 'exit 3']);
    expect(r.code).toBe(10);
    expect(r.stderr).not.toMatch(/done in/);
    expect(r.stderr).toMatch(/^ferry: failed at .* after [\d.]+s \([\d.]+ (B|KiB|MiB) moved\)\nferry: error: /m);
    expect(inspect('container', name).State).toMatchObject({ Running: true, Paused: false });
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
      '--stop-timeout', // busybox's sleep as PID 1 ignores SIGTERM: the backup kills it after 1 s, not 10
      '1',
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
