/**
 * The bundle as an artifact: streamed through a pipe, opened by hand with tar/docker load/zstd,
 * refused when damaged (restore creates nothing), several containers in one bundle, bind mounts,
 * and --consistency stop.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  BUSYBOX,
  cleanup,
  memberOffset,
  docker,
  ENGINE_A,
  ENGINE_B,
  exists,
  ferry,
  inspect,
  sh,
  uid,
  volumeListing,
  waitFor,
} from '../helpers/lab.js';

const dir = mkdtempSync(path.join(tmpdir(), 'ferry-bundle-'));
const a = uid('ba');
const b = uid('bb');
const shared = `${a}-shared`;
const own = `${a}-own`;
let bundle = '';

function setup() {
  docker(['volume', 'create', shared]);
  docker(['volume', 'create', own]);
  docker([
    'run',
    '-d',
    '--name',
    a,
    // busybox's sleep as PID 1 ignores SIGTERM: a stop (--consistency stop) kills it after 1 s, not 10
    '--stop-timeout',
    '1',
    '-e',
    'ROLE=a',
    '-v',
    `${shared}:/shared`,
    '-v',
    `${own}:/own`,
    BUSYBOX,
    'sleep',
    '100000',
  ]);
  docker(['run', '-d', '--name', b, '-e', 'ROLE=b', '-v', `${shared}:/shared:ro`, BUSYBOX, 'sleep', '100000']);
  docker([
    'exec',
    a,
    'sh',
    '-c',
    'echo shared > /shared/s; dd if=/dev/urandom of=/own/blob bs=1024 count=2048 2>/dev/null; echo own > /own/o',
  ]);
}

beforeAll(() => {
  setup();
});

afterAll(() => {
  cleanup(ENGINE_A, { containers: [a, b, `${a}-piped`], volumes: [shared, own] });
  cleanup(ENGINE_B, { images: [] });
  rmSync(dir, { recursive: true, force: true });
});

describe('a bundle of two containers sharing a volume', () => {
  it('holds both, with the shared volume once', async () => {
    bundle = path.join(dir, 'two.tar');
    const r = await ferry(['backup', a, b, '-o', bundle]);
    expect(r.code, r.stderr).toBe(0);
    expect(statSync(bundle).mode & 0o777).toBe(0o600);
    const names = execFileSync('tar', ['-tf', bundle], { encoding: 'utf8' }).trim().split('\n');
    expect(names[0]).toBe('manifest.json');
    expect(names.slice(-2)).toEqual(['trailer.json', 'SHA256SUMS']);
    expect(names.filter((n) => n.startsWith('volumes/')).sort()).toEqual(
      [`volumes/${own}.tar.zst`, `volumes/${shared}.tar.zst`].sort(),
    );
    expect(names.filter((n) => n.startsWith('images/')).length).toBe(2);
  });

  it('opens with plain tar, sha256sum, zstd and docker load', () => {
    const x = path.join(dir, 'x');
    mkdirSync(x);
    execFileSync('tar', ['-xf', bundle, '-C', x]);
    execFileSync('sha256sum', ['-c', 'SHA256SUMS'], { cwd: x });
    const listing = execFileSync('sh', ['-c', `zstd -dc volumes/${own}.tar.zst | tar -tvf -`], {
      cwd: x,
      encoding: 'utf8',
    });
    expect(listing).toMatch(/\.\/blob/);
    const img = readdirSync(path.join(x, 'images'))[0]!;
    // docker load on the other engine accepts the image member as it is
    const out = docker(['load', '-i', path.join(x, 'images', img)], { host: ENGINE_B });
    expect(out).toMatch(/Loaded image: ferry\//);
    const ref = /Loaded image: (\S+)/.exec(out)![1]!;
    docker(['rmi', ref], { host: ENGINE_B });
  });

  it('restores both containers and both volumes', async () => {
    const ownBefore = volumeListing(own);
    const sharedBefore = volumeListing(shared);
    cleanup(ENGINE_A, { containers: [a, b], volumes: [shared, own] });
    const r = await ferry(['restore', bundle]);
    expect(r.code, r.stderr).toBe(0);
    expect(inspect('container', a).Config.Env).toContain('ROLE=a');
    expect(inspect('container', b).Config.Env).toContain('ROLE=b');
    expect(inspect('container', b).HostConfig.Binds).toEqual([`${shared}:/shared:ro`]);
    expect(volumeListing(own)).toBe(ownBefore);
    expect(volumeListing(shared)).toBe(sharedBefore);
    expect(docker(['exec', b, 'cat', '/shared/s'])).toBe('shared');
  });
});

describe('streams', () => {
  it('backs up to stdout and restores from stdin with no file in between', () => {
    const r = sh(
      `set -e; $FERRY backup ${a} -o - --compress gzip | $FERRY restore - --name ${a}-piped --on-conflict rename --no-start`,
    );
    expect(r.code, r.stderr).toBe(0);
    const c = inspect('container', `${a}-piped`);
    expect(c.State.Running).toBe(false);
    expect(c.Config.Env).toContain('ROLE=a');
    // restored beside the originals: volumes renamed, originals untouched
    const vols = c.Mounts.map((m: any) => m.Name).sort();
    expect(vols).toEqual([`${own}-restored`, `${shared}-restored`].sort());
    expect(volumeListing(`${own}-restored`)).toBe(volumeListing(own));
    cleanup(ENGINE_A, { containers: [`${a}-piped`], volumes: [`${own}-restored`, `${shared}-restored`] });
  });

  it('a reader that goes away: help text just stops (exit 0, no stack trace); a bundle on stdout stops as SIGPIPE would (141) and the container runs on', () => {
    // The sh of the lab is dash: the exit code of the pipeline's first command goes through a file.
    // `true` has exited long before ferry (0.25 s to start) writes its help.
    const help = sh(
      `{ $FERRY backup --help 2>&1; echo $? > /tmp/ferry-help-rc-$$; } | true; cat /tmp/ferry-help-rc-$$; rm -f /tmp/ferry-help-rc-$$`,
    );
    expect(help.stdout.trim()).toBe('0');
    const cut = sh(
      `{ $FERRY backup ${a} -o - --compress none 2>/dev/null; echo $? > /tmp/ferry-cut-rc-$$; } | head -c 100000 >/dev/null; cat /tmp/ferry-cut-rc-$$; rm -f /tmp/ferry-cut-rc-$$`,
    );
    expect(cut.stdout.trim()).toBe('141');
    const st = inspect('container', a).State;
    expect(st.Running && !st.Paused).toBe(true);
  });

  it('a stream cut short is refused and restores nothing', () => {
    const r = sh(
      `$FERRY backup ${a} -o - --compress none | head -c 1500000 | $FERRY restore - --name ${a}-cut --on-conflict rename`,
    );
    expect(r.code).toBe(7);
    expect(r.stderr).not.toMatch(/at .*\.js:\d+/);
    expect(exists('container', `${a}-cut`)).toBe(false);
    expect(exists('volume', `${own}-restored`)).toBe(false);
  });
});

describe('damaged bundles are refused, and restore creates nothing', () => {
  let single = '';
  beforeAll(async () => {
    single = path.join(dir, 'single.tar');
    const r = await ferry(['backup', a, '-o', single]);
    expect(r.code, r.stderr).toBe(0);
  });
  const volsNow = () => docker(['volume', 'ls', '-q']).split('\n').sort();

  function damaged(name: string, mutate: (buf: Buffer) => Buffer): string {
    const p = path.join(dir, name);
    writeFileSync(p, mutate(readFileSync(single)));
    return p;
  }

  const cases: [string, (b: Buffer) => Buffer, RegExp][] = [
    [
      'flipped byte in a volume member',
      (buf) => {
        const c = Buffer.from(buf);
        const o = memberOffset(c, `volumes/${own}`) + 1000;
        c[o] = c[o]! ^ 0xff;
        return c;
      },
      new RegExp(`volumes/${own}|zstd`),
    ],
    [
      'flipped byte in the image member',
      (buf) => {
        const c = Buffer.from(buf);
        const o = memberOffset(c, 'images/') + 5000;
        c[o] = c[o]! ^ 0xff;
        return c;
      },
      /images\/.*(damaged|does not decompress)|sha256/,
    ],
    [
      'a manifest that declares a member smaller than it inflates (decompression bomb)',
      (buf) => declareRaw(buf, 'manifest.json', 1),
      /inflates past its declared size \(1 bytes\); stopped/,
    ],
    ['truncated', (buf) => buf.subarray(0, Math.floor(buf.length / 2)), /not a complete bundle|incomplete|truncated/],
    ['not a tar at all', () => Buffer.from('hello, I am not a bundle\n'.repeat(100)), /not a ferry bundle/],
    [
      'a newer format version',
      (buf) => {
        const c = Buffer.from(buf);
        const o = memberOffset(c, 'manifest.json');
        const s = c.toString('utf8', o, o + 200);
        const i = s.indexOf('"formatVersion": 1');
        c.write('"formatVersion": 9', o + i);
        return c;
      },
      /newer than this ferry understands/,
    ],
  ];

  it('a decompression bomb arriving on stdin is stopped at the size declared before its data, and nothing is created', async () => {
    const p = damaged('bomb-stdin.tar', (buf) => declareRaw(buf, 'manifest.json', 1));
    const before = volsNow();
    const r = await ferry(['restore', '-', '--name', `${a}-bad`, '--on-conflict', 'rename'], { stdinFile: p });
    expect(r.code, r.stderr).toBe(7);
    expect(r.stderr).toMatch(/inflates past its declared size \(1 bytes\); stopped/);
    expect(exists('container', `${a}-bad`)).toBe(false);
    expect(volsNow()).toEqual(before);
  });

  it('a bundle written to a stream declares its part size first; a part inflating past it on stdin is stopped', async () => {
    const streamed = path.join(dir, 'streamed.tar');
    const w = await ferry(['backup', a, '-o', '-'], { stdoutFile: streamed });
    expect(w.code, w.stderr).toBe(0);
    const c = Buffer.from(readFileSync(streamed));
    const o = memberOffset(c, 'manifest.json');
    const at = c.indexOf(Buffer.from('"partRawBytes": 16777216'), o);
    expect(at).toBeGreaterThan(o);
    c.write('"partRawBytes": 1000    ', at); // same length: the bundle stays well-formed
    const p = path.join(dir, 'streamed-bomb.tar');
    writeFileSync(p, c);
    const before = volsNow();
    const r = await ferry(['restore', '-', '--name', `${a}-bad`, '--on-conflict', 'rename'], { stdinFile: p });
    expect(r.code, r.stderr).toBe(7);
    expect(r.stderr).toMatch(/member \S+( \(part \d+\))? inflates past its declared size \(1000 bytes\); stopped/);
    expect(exists('container', `${a}-bad`)).toBe(false);
    expect(volsNow()).toEqual(before);
    // The untouched stream bundle restores.
    const ok = await ferry(['restore', '-', '--name', `${a}-streamed`, '--on-conflict', 'rename', '--no-start'], {
      stdinFile: streamed,
    });
    expect(ok.code, ok.stderr).toBe(0);
    cleanup(ENGINE_A, { containers: [`${a}-streamed`], volumes: [`${own}-restored`, `${shared}-restored`] });
  });

  for (const [what, mutate, message] of cases) {
    it(what, async () => {
      const p = damaged(what.replace(/\W+/g, '-') + '.tar', mutate);
      const before = volsNow();
      const r = await ferry(['restore', p, '--name', `${a}-bad`, '--on-conflict', 'rename']);
      expect(r.code, r.stderr).toBe(7);
      expect(r.stderr).toMatch(message);
      expect(r.stderr).not.toMatch(/at .*\.js:\d+/);
      expect(exists('container', `${a}-bad`)).toBe(false);
      expect(volsNow()).toEqual(before);
    });
  }
});

describe('verify and declared sizes', () => {
  it('ferry verify names a member whose decompressed size differs from what the bundle declares', async () => {
    const single = path.join(dir, 'verify-size.tar');
    expect((await ferry(['backup', a, '-o', single])).code).toBe(0);
    const digits = /"rawBytes": (\d+)/.exec(
      readFileSync(single).toString(
        'utf8',
        memberOffset(readFileSync(single), 'manifest.json'),
        memberOffset(readFileSync(single), 'manifest.json') + 8192,
      ),
    )![1]!.length;
    // A consistent lie (manifest and trailer agree) either way: smaller, then larger than the data.
    for (const [n, message] of [
      [1, /inflates past its declared size \(1 bytes\)/],
      [
        Number('9'.repeat(digits)),
        new RegExp(`decompresses to \\d+ bytes, the trailer declares ${'9'.repeat(digits)}`),
      ],
    ] as const) {
      const c = declareRaw(declareRaw(readFileSync(single), 'manifest.json', n), 'trailer.json', n);
      const p = path.join(dir, `verify-size-bad-${n}.tar`);
      writeFileSync(p, c);
      const r = await ferry(['verify', p]);
      expect(r.code, r.stdout + r.stderr).toBe(7);
      expect(r.stdout + r.stderr).toMatch(message);
    }
  });
});

describe('--on-conflict replace', () => {
  it('refuses before removing anything when a volume to replace is used by another container', async () => {
    const p = path.join(dir, 'replace.tar');
    expect((await ferry(['backup', a, '-o', p])).code).toBe(0);
    const id = inspect('container', a).Id;
    const r = await ferry(['restore', p, '--on-conflict', 'replace']);
    expect(r.code, r.stderr).toBe(6);
    expect(r.stderr).toMatch(new RegExp(`volume ${shared} is also used by ${b}`));
    expect(inspect('container', a).Id).toBe(id); // the original is still there
  });

  it('checks the whole bundle before removing anything: a damaged one leaves the container and its data as they were', async () => {
    const c = uid('rep');
    const v = `${c}-data`;
    docker([
      'run',
      '-d',
      '--name',
      c,
      '--stop-timeout', // its shell ignores SIGTERM: the replace from a pipe kills it after 1 s, not 10
      '1',
      '-v',
      `${v}:/data`,
      BUSYBOX,
      'sh',
      '-c',
      'dd if=/dev/urandom of=/data/blob bs=1M count=4 2>/dev/null; sleep 100000',
    ]);
    try {
      await waitFor(
        'the data',
        () => docker(['exec', c, 'sh', '-c', 'test -s /data/blob && echo ok'], { allowFail: true }) === 'ok',
      );
      const p = path.join(dir, 'replace-damaged.tar');
      expect((await ferry(['backup', c, '-o', p, '--compress', 'none'])).code).toBe(0);
      const buf = readFileSync(p);
      const o = memberOffset(buf, `volumes/${v}`) + 1024 * 1024; // well inside the volume's data
      buf[o] = buf[o]! ^ 0xff;
      writeFileSync(p, buf);
      docker(['exec', c, 'sh', '-c', 'echo "written after the backup" > /data/newer']);
      const id = inspect('container', c).Id;
      const d = await ferry(['restore', p, '--on-conflict', 'replace', '--dry-run']);
      expect(d.code, d.stderr).toBe(0);
      expect(d.stdout).toMatch(
        /first read and check the whole bundle \(a damaged one changes nothing\)\n.*replace volume/,
      );
      const r = await ferry(['restore', p, '--on-conflict', 'replace']);
      expect(r.code, r.stderr).toBe(7);
      expect(r.stderr).toMatch(new RegExp(`is damaged \\(bad: volumes/${v}[^)]*\\); nothing was replaced or written`));
      expect(r.stderr).not.toMatch(/remove existing/);
      expect(inspect('container', c).Id).toBe(id);
      expect(docker(['exec', c, 'cat', '/data/newer'])).toBe('written after the backup');
      // From a pipe a bundle cannot be read twice: that is said before anything is removed.
      const good = path.join(dir, 'replace-good.tar');
      expect((await ferry(['backup', c, '-o', good, '--compress', 'none'])).code).toBe(0);
      const s = await ferry(['restore', '-', '--on-conflict', 'replace'], { stdinFile: good });
      expect(s.code, s.stderr).toBe(0);
      expect(s.stderr).toMatch(
        /a bundle from a pipe cannot be read twice, so it is not checked before what it replaces is changed/,
      );
      expect(s.stderr.indexOf('cannot be read twice')).toBeLessThan(s.stderr.indexOf('set it aside'));
      expect(s.stderr.indexOf('set it aside')).toBeGreaterThan(0);
      expect(docker(['exec', c, 'cat', '/data/newer'])).toBe('written after the backup');
    } finally {
      cleanup(ENGINE_A, { containers: [c], volumes: [v] });
    }
  });
});

describe('options', () => {
  it('--consistency stop stops the container for the copy and starts it again', async () => {
    const startedBefore = inspect('container', a).State.StartedAt;
    const r = await ferry(['backup', a, '-o', path.join(dir, 'stop.tar'), '--consistency', 'stop']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/stop .*\n(.*\n)*.*start .* again/);
    const st = inspect('container', a).State;
    expect(st.Running).toBe(true);
    expect(st.StartedAt).not.toBe(startedBefore);
  });

  it('bind mounts are recorded; their data is copied with --include-binds and written back with --restore-binds', async () => {
    const host = mkdtempSync(path.join(tmpdir(), 'ferry-bind-'));
    writeFileSync(path.join(host, 'config.ini'), 'key=value\n');
    const c = uid('bind');
    docker(['run', '-d', '--name', c, '-v', `${host}:/etc/app:ro`, BUSYBOX, 'sleep', '100000']);
    try {
      const p1 = path.join(dir, 'nobinds.tar');
      const r1 = await ferry(['backup', c, '-o', p1]);
      expect(r1.code, r1.stderr).toBe(0);
      expect(r1.stderr).toMatch(/recorded, not copied/);
      expect(execFileSync('tar', ['-tf', p1], { encoding: 'utf8' })).not.toMatch(/binds\//);
      const p2 = path.join(dir, 'binds.tar');
      const r2 = await ferry(['backup', c, '-o', p2, '--include-binds']);
      expect(r2.code, r2.stderr).toBe(0);
      expect(execFileSync('tar', ['-tf', p2], { encoding: 'utf8' })).toMatch(/binds\//);
      docker(['rm', '-f', c]);
      rmSync(host, { recursive: true, force: true });
      const r3 = await ferry(['restore', p2, '--restore-binds']);
      expect(r3.code, r3.stderr).toBe(0);
      expect(readFileSync(path.join(host, 'config.ini'), 'utf8')).toBe('key=value\n');
      expect(inspect('container', c).HostConfig.Binds).toEqual([`${host}:/etc/app:ro`]);
      // A damaged bundle writes nothing over the host's files: it is checked whole first.
      const buf = readFileSync(p2);
      const o = memberOffset(buf, 'binds/') + 100;
      buf[o] = buf[o]! ^ 0xff;
      const p3 = path.join(dir, 'binds-damaged.tar');
      writeFileSync(p3, buf);
      writeFileSync(path.join(host, 'config.ini'), 'key=changed since\n');
      const r4 = await ferry(['restore', p3, '--restore-binds', '--on-conflict', 'rename']);
      expect(r4.code, r4.stderr).toBe(7);
      expect(r4.stderr).toMatch(/verify the whole bundle before changing anything \(--restore-binds\)/);
      expect(readFileSync(path.join(host, 'config.ini'), 'utf8')).toBe('key=changed since\n');
      expect(exists('container', `${c}-restored`)).toBe(false);
    } finally {
      cleanup(ENGINE_A, { containers: [c, `${c}-restored`] });
      rmSync(host, { recursive: true, force: true });
    }
  });

  it('usage errors and unknown containers exit with their documented codes, without a stack trace', async () => {
    const r1 = await ferry(['backup', 'no-such-container-xyz', '-o', dir]);
    expect(r1.code).toBe(5);
    expect(r1.stderr).toMatch(/no such container: no-such-container-xyz/);
    expect(r1.stderr).not.toMatch(/at .*\.js:\d+/);
    const r2 = await ferry(['backup', a, '-o', dir, '--compress', 'lzma']);
    expect(r2.code).toBe(2);
    const r3 = await ferry(['restore', path.join(dir, 'missing.tar')]);
    expect(r3.code).toBe(5);
    const r4 = await ferry(['-H', 'unix:///nonexistent.sock', 'backup', a, '-o', dir]);
    expect(r4.code).toBe(4);
    expect(r4.stderr).toMatch(/cannot reach the Docker engine/);
  });
});

/** A copy of a bundle whose `member` (manifest.json or trailer.json) declares `n` raw bytes for its first data member. */
function declareRaw(buf: Buffer, member: string, n: number): Buffer {
  const c = Buffer.from(buf);
  const o = memberOffset(c, member);
  const m = /"rawBytes": (\d+)/.exec(c.toString('utf8', o, o + 8192))!;
  expect(String(n).length).toBeLessThanOrEqual(m[1]!.length);
  c.write(
    `"rawBytes": ${String(n).padEnd(m[1]!.length, ' ')}`,
    o + Buffer.byteLength(c.toString('utf8', o, o + 8192).slice(0, m.index)),
  );
  return c;
}
