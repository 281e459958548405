/**
 * --consistency stop and --stop-timeout: a container that ignores SIGTERM (PID 1 without a
 * handler) is killed after the given time and the kill is reported; one that stops cleanly is not
 * reported. Either way it runs again after the backup. --together: all the containers of a bundle are
 * quiesced before any volume is read, and resumed together (dependents stopped first, started last).
 * The ferry.consistency and ferry.stop-timeout labels: a container's own way to be quiesced, which
 * the command line's options override.
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BUSYBOX, cleanup, docker, ENGINE_A, ENGINE_B, ferry, inspect, uid } from '../helpers/lab.js';

const dir = mkdtempSync(path.join(tmpdir(), 'ferry-stop-'));
const stubborn = uid('stubborn');
const polite = uid('polite');

beforeAll(() => {
  docker(['run', '-d', '--name', stubborn, '-v', `${stubborn}:/data`, BUSYBOX, 'sleep', '100000']);
  docker([
    'run',
    '-d',
    '--name',
    polite,
    '-v',
    `${polite}:/data`,
    BUSYBOX,
    'sh',
    '-c',
    'trap "exit 0" TERM; while :; do sleep 1; done',
  ]);
});

afterAll(() => {
  cleanup(ENGINE_A, { containers: [stubborn, polite], volumes: [stubborn, polite] });
  cleanup(ENGINE_B, { containers: [stubborn], volumes: [stubborn] });
  rmSync(dir, { recursive: true, force: true });
});

describe('--stop-timeout', () => {
  it('a container that ignores SIGTERM is killed after --stop-timeout, and the kill is reported', async () => {
    const t0 = Date.now();
    const r = await ferry(['backup', stubborn, '-o', dir, '--consistency', 'stop', '--stop-timeout', '1']);
    expect(r.code, r.stderr).toBe(0);
    expect(Date.now() - t0).toBeLessThan(8000); // not the default 10 s
    expect(r.stderr).toMatch(
      new RegExp(`warning: ${stubborn} did not stop within 1s and was killed \\(SIGKILL\\).*--stop-timeout`),
    );
    expect(inspect('container', stubborn).State.Running).toBe(true);
  });

  it('a clean stop is not reported', async () => {
    const r = await ferry(['backup', polite, '-o', dir, '--consistency', 'stop', '--stop-timeout', '5']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).not.toMatch(/SIGKILL/);
    expect(inspect('container', polite).State.Running).toBe(true);
  });

  it('migrate --stop-source reports the kill too', async () => {
    const r = await ferry(['migrate', stubborn, '--to', ENGINE_B, '--stop-source', '--stop-timeout', '1']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(new RegExp(`${stubborn} did not stop within 1s and was killed`));
    expect(inspect('container', stubborn).State.Running).toBe(false);
    expect(inspect('container', stubborn, ENGINE_B).State.Running).toBe(true);
  });

  it('refuses a timeout that is not whole seconds', async () => {
    const r = await ferry(['backup', polite, '-o', dir, '--consistency', 'stop', '--stop-timeout', '1.5']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--stop-timeout.*expected whole seconds/);
  });

  it('warns that swarm replaces a task container that --consistency stop stops, and that a restored one is unmanaged', async () => {
    // The labels swarm puts on a task's container (no swarm is started here: only what ferry reads).
    const task = uid('task');
    docker([
      'run',
      '-d',
      '--name',
      task,
      '--label',
      'com.docker.swarm.service.name=shop-web',
      '--label',
      'com.docker.swarm.task.id=abc',
      BUSYBOX,
      'sh',
      '-c',
      'trap "exit 0" TERM; while :; do sleep 1; done',
    ]);
    try {
      const out = path.join(dir, 'task');
      const r = await ferry(['backup', task, '-o', out, '--mkdir', '--consistency', 'stop']);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toMatch(
        new RegExp(
          `warning: ${task} is a task of swarm service shop-web: when --consistency stop stops it, swarm starts a replacement`,
        ),
      );
      const paused = await ferry(['backup', task, '-o', out, '--mkdir']);
      expect(paused.stderr).not.toMatch(/swarm/);
      const restored = await ferry([
        '-H',
        ENGINE_B,
        'restore',
        path.join(out, readdirSync(out).sort()[0]!),
        '--no-start',
      ]);
      expect(restored.code, restored.stderr).toBe(0);
      expect(restored.stderr).toMatch(
        new RegExp(`${task} was a task of swarm service shop-web; it is restored as a plain container`),
      );
    } finally {
      cleanup(ENGINE_A, { containers: [task] });
      cleanup(ENGINE_B, { containers: [task] });
    }
  });

  it("a container in the stopped one's network namespace is restarted after it, and has its network back", async () => {
    const side = uid('nsside');
    // its sleep ignores SIGTERM: the restart kills it after 1 s, not 10
    docker([
      'run',
      '-d',
      '--name',
      side,
      '--stop-timeout',
      '1',
      '--network',
      `container:${polite}`,
      BUSYBOX,
      'sleep',
      '100000',
    ]);
    try {
      const eth0 = () =>
        docker(['exec', side, 'ip', '-o', '-4', 'addr', 'show'])
          .split('\n')
          .filter((l) => !l.includes(' lo ')).length;
      expect(eth0()).toBe(1);
      const r = await ferry(['backup', polite, '-o', dir, '--consistency', 'stop', '--stop-timeout', '5']);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toMatch(
        new RegExp(`restart ${side} \\(it runs in ${polite}'s network, which the stop took away\\)`),
      );
      expect(inspect('container', side).State.Running).toBe(true);
      expect(eth0()).toBe(1); // without the restart only the loopback is left
    } finally {
      cleanup(ENGINE_A, { containers: [side] });
    }
  });
});

describe('--together', () => {
  /**
   * Record engine A's pause, unpause, die and start events of `names` from now on; stop() returns
   * them in order as "action name" lines.
   */
  async function recordEvents(names: string[]): Promise<{ stop: () => Promise<string[]> }> {
    const child = spawn('docker', [
      '-H',
      ENGINE_A,
      'events',
      '--filter',
      'type=container',
      '--format',
      '{{.Action}} {{.Actor.Attributes.name}}',
    ]);
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    await new Promise((res) => setTimeout(res, 500)); // subscribed
    return {
      stop: async () => {
        await new Promise((res) => setTimeout(res, 500)); // the last events arrive
        child.kill();
        return out.split('\n').filter((l) => /^(pause|unpause|die|start) /.test(l) && names.includes(l.split(' ')[1]!));
      },
    };
  }

  it('pauses every container of the bundle before reading any volume, and resumes them together', async () => {
    const [one, two] = [uid('togone'), uid('togtwo')];
    for (const c of [one, two]) docker(['run', '-d', '--name', c, '-v', `${c}:/data`, BUSYBOX, 'sleep', '100000']);
    try {
      const rec = await recordEvents([one, two]);
      const plain = await ferry(['backup', one, two, '-o', dir, '--compress', 'none']);
      expect(plain.code, plain.stderr).toBe(0);
      const r = await ferry(['--json', 'backup', one, two, '-o', dir, '--compress', 'none', '--together']);
      expect(r.code, r.stderr).toBe(0);
      const seen = await rec.stop();
      // One after the other without it, all at once with it.
      expect(seen.slice(0, 4)).toEqual([`pause ${one}`, `unpause ${one}`, `pause ${two}`, `unpause ${two}`]);
      expect(seen.slice(4).map((l) => l.split(' ')[0])).toEqual(['pause', 'pause', 'unpause', 'unpause']);
      expect(r.stderr.indexOf(`pause ${two}`)).toBeLessThan(r.stderr.indexOf('volume '));
      for (const c of [one, two]) expect(inspect('container', c).State.Status).toBe('running');
      const v = await ferry(['verify', JSON.parse(r.stdout).bundle]);
      expect(v.code, v.stderr).toBe(0);
    } finally {
      cleanup(ENGINE_A, { containers: [one, two], volumes: [one, two] });
    }
  });

  it('with --consistency stop: stops a sidecar before the app whose network it uses, and starts the app first', async () => {
    const app = uid('togapp');
    const side = uid('togside');
    docker(['run', '-d', '--name', app, '--stop-timeout', '1', BUSYBOX, 'sleep', '100000']);
    docker([
      'run',
      '-d',
      '--name',
      side,
      '--stop-timeout',
      '1',
      '--network',
      `container:${app}`,
      BUSYBOX,
      'sleep',
      '100000',
    ]);
    try {
      const rec = await recordEvents([app, side]);
      const r = await ferry([
        'backup',
        app,
        side,
        '-o',
        dir,
        '--consistency',
        'stop',
        '--together',
        '--compress',
        'none',
      ]);
      expect(r.code, r.stderr).toBe(0);
      const seen = await rec.stop();
      // The sidecar may be restarted once more after (it runs in the app's network namespace).
      expect(seen.slice(0, 4)).toEqual([`die ${side}`, `die ${app}`, `start ${app}`, `start ${side}`]);
      for (const c of [app, side]) expect(inspect('container', c).State.Running).toBe(true);
    } finally {
      cleanup(ENGINE_A, { containers: [side, app] });
    }
  });
});

describe('ferry.consistency and ferry.stop-timeout labels', () => {
  const manifestOf = (bundle: string) =>
    JSON.parse(execFileSync('tar', ['-xOf', bundle, 'manifest.json'], { encoding: 'utf8' }));
  const startedAt = (c: string) => inspect('container', c).State.StartedAt as string;

  it('a container labelled to be stopped is stopped (with its own timeout) without any option; --consistency overrides the label', async () => {
    const c = uid('labelled');
    try {
      docker([
        'run',
        '-d',
        '--name',
        c,
        '--label',
        'ferry.consistency=stop',
        '--label',
        'ferry.stop-timeout=1',
        '-v',
        `${c}:/data`,
        BUSYBOX,
        'sleep',
        '100000',
      ]);
      const before = startedAt(c);
      const t0 = Date.now();
      const r = await ferry(['--json', 'backup', c, '-o', dir]);
      expect(r.code, r.stderr).toBe(0);
      expect(Date.now() - t0).toBeLessThan(8000); // its label's 1 s, not the default 10 s
      expect(r.stderr).toMatch(new RegExp(`warning: ${c} did not stop within 1s and was killed`));
      expect(manifestOf(JSON.parse(r.stdout).bundle).containers[0].consistency).toBe('stop');
      expect(inspect('container', c).State.Running).toBe(true);
      expect(startedAt(c)).not.toBe(before); // stopped and started again

      const again = startedAt(c);
      const p = await ferry(['--json', 'backup', c, '-o', dir, '--consistency', 'pause']);
      expect(p.code, p.stderr).toBe(0);
      expect(p.stderr).not.toMatch(/SIGKILL/);
      expect(manifestOf(JSON.parse(p.stdout).bundle).containers[0].consistency).toBe('pause');
      expect(startedAt(c)).toBe(again); // only paused
    } finally {
      cleanup(ENGINE_A, { containers: [c], volumes: [c] });
    }
  });

  it('migrate --stop-source gives a container the stop timeout of its label', async () => {
    const c = uid('labelledmig');
    try {
      docker(['run', '-d', '--name', c, '--label', 'ferry.stop-timeout=1', BUSYBOX, 'sleep', '100000']);
      const t0 = Date.now();
      const r = await ferry(['migrate', c, '--to', ENGINE_B, '--stop-source']);
      expect(r.code, r.stderr).toBe(0);
      expect(Date.now() - t0).toBeLessThan(15000);
      expect(r.stderr).toMatch(new RegExp(`${c} did not stop within 1s and was killed`));
      expect(inspect('container', c, ENGINE_B).State.Running).toBe(true);
    } finally {
      cleanup(ENGINE_A, { containers: [c] });
      cleanup(ENGINE_B, { containers: [c] });
      for (const img of docker(['images', '-q', `ferry/${c}`], { host: ENGINE_B })
        .split('\n')
        .filter(Boolean))
        docker(['rmi', '-f', img], { host: ENGINE_B, allowFail: true });
    }
  });

  it('a label with a value ferry does not know is a usage error naming it, before anything happens', async () => {
    const c = uid('badlabel');
    try {
      docker(['run', '-d', '--name', c, '--label', 'ferry.consistency=freeze', BUSYBOX, 'sleep', '100000']);
      const r = await ferry(['backup', c, '-o', dir]);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain(`${c}: its label ferry.consistency=freeze is not pause, stop or none`);
      expect(r.stderr).not.toMatch(/at .*\.js:\d+/);
      expect(inspect('container', c).State.Paused).toBe(false);
      const ok = await ferry(['backup', c, '-o', dir, '--consistency', 'none']);
      expect(ok.code, ok.stderr).toBe(0);
    } finally {
      cleanup(ENGINE_A, { containers: [c] });
    }
  });
});
