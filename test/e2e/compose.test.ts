/**
 * A Compose stack (made by the real docker-compose, which the lab installs from Debian) backed up,
 * restored and migrated as one unit: `--project` takes every container of the project, stopped
 * services too; after `docker-compose down -v` a restore brings back containers, volume and the
 * project's network, the services find each other by name again, and Compose adopts what ferry
 * recreated (`up -d` finds everything up to date and recreates nothing).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BUSYBOX, cleanup, docker, ENGINE_A, ENGINE_B, exists, ferry, inspect, uid, waitFor } from '../helpers/lab.js';

const dir = mkdtempSync(path.join(tmpdir(), 'ferry-compose-'));
const project = uid('ftc');
const [web, client, job] = ['web', 'client', 'job'].map((s) => `${project}_${s}_1`) as [string, string, string];
const volume = `${project}_content`;
const network = `${project}_default`;
const PAGE = 'served by the compose stack';
let bundle = '';

/** docker-compose on engine A for this test's project; throws on failure. */
function compose(...args: string[]): string {
  const r = spawnSync('docker-compose', ['-p', project, '-f', path.join(dir, 'docker-compose.yml'), ...args], {
    encoding: 'utf8',
    env: { ...process.env, DOCKER_HOST: ENGINE_A },
  });
  if (r.status !== 0) throw new Error(`docker-compose ${args.join(' ')} failed (${r.status}): ${r.stderr}`);
  return `${r.stdout}${r.stderr}`;
}

/** The project and service labels of a container (undefined when it has none). */
function composeLabels(container: string): { project?: string; service?: string } {
  const labels = inspect('container', container).Config.Labels as Record<string, string>;
  return { project: labels['com.docker.compose.project'], service: labels['com.docker.compose.service'] };
}

const served = (host: string) => docker(['exec', client, 'wget', '-q', '-O', '-', 'http://web:8081/'], { host });

beforeAll(async () => {
  writeFileSync(
    path.join(dir, 'docker-compose.yml'),
    [
      'version: "3.7"',
      'services:',
      '  web:',
      `    image: ${BUSYBOX}`,
      '    command: httpd -f -p 8081 -h /data',
      '    stop_grace_period: 1s', // busybox as PID 1 ignores SIGTERM: no 10 s wait for each stop
      '    volumes: [content:/data]',
      '  client:',
      `    image: ${BUSYBOX}`,
      '    command: sleep 100000',
      '    stop_grace_period: 1s',
      '    depends_on: [web]',
      '  job:', // a one-shot service: exited when the backup runs
      `    image: ${BUSYBOX}`,
      '    command: "true"',
      'volumes:',
      '  content:',
      '',
    ].join('\n'),
  );
  compose('up', '-d');
  docker(['exec', web, 'sh', '-c', `echo "${PAGE}" > /data/index.html`]);
  expect(served(ENGINE_A)).toBe(PAGE);
  const r = await ferry(['--json', 'backup', '--project', project, '-o', dir, '--compress', 'none']);
  expect(r.code, r.stderr).toBe(0);
  expect([...JSON.parse(r.stdout).containers].sort()).toEqual([client, job, web].sort());
  bundle = path.join(
    dir,
    readdirSync(dir).find((f) => f.endsWith('.tar'))!,
  );
  expect(path.basename(bundle)).toMatch(new RegExp(`^ferry-${project}-\\d{8}T\\d{6}Z\\.tar$`)); // named after the project
});

afterAll(() => {
  try {
    compose('down', '-v');
  } catch {
    // already down
  }
  for (const host of [ENGINE_A, ENGINE_B])
    cleanup(host, { containers: [web, client, job], volumes: [volume], networks: [network] });
  rmSync(dir, { recursive: true, force: true });
});

describe('a Compose project', () => {
  it('is restored as a unit after `down -v`, and Compose adopts it without recreating anything', async () => {
    compose('down', '-v');
    expect(exists('volume', volume)).toBe(false);
    expect(exists('network', network)).toBe(false);

    const r = await ferry(['restore', bundle]);
    expect(r.code, r.stderr).toBe(0);
    expect(served(ENGINE_A)).toBe(PAGE); // the volume's data, and `web` resolves on the project's network
    expect(inspect('container', job).State.Running).toBe(false); // it had exited: created, not started
    expect(inspect('network', network).Labels['com.docker.compose.project']).toBe(project);

    const ids = [web, client, job].map((c) => inspect('container', c).Id);
    const up = compose('up', '-d');
    expect(up).toMatch(new RegExp(`${web} is up-to-date`));
    expect(up).toMatch(new RegExp(`${client} is up-to-date`));
    expect(up).not.toMatch(/Recreating|Creating/);
    expect([web, client, job].map((c) => inspect('container', c).Id)).toEqual(ids);
    expect(compose('ps', '-q').split('\n').filter(Boolean).sort()).toEqual([...ids].sort());
  });

  it('a copy restored beside the stack (--on-conflict rename) on a network of its own has no Compose labels: Compose goes on managing only the originals', async () => {
    const ids = compose('ps', '-q').split('\n').filter(Boolean).sort();
    docker(['exec', web, 'sh', '-c', 'echo live > /data/index.html']);
    try {
      // The project's network keeps its subnet, which the live network holds: the engine picks one.
      const r = await ferry([
        'restore',
        bundle,
        '--on-conflict',
        'rename',
        '--map-network',
        `${network}=${network}-copy`,
      ]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toMatch(
        new RegExp(
          `${web}-restored is created with the Compose labels of ${web} \\(service web of project ${project}\\) emptied`,
        ),
      );
      expect(r.stderr).toMatch(new RegExp(`network ${network}-copy: its subnet .* is taken here`));
      for (const c of [web, client, job]) expect(composeLabels(`${c}-restored`)).toEqual({ project: '', service: '' });
      // The copies reach each other by service name, on their own network; the live stack its own.
      expect(docker(['exec', `${client}-restored`, 'wget', '-q', '-O', '-', 'http://web:8081/'])).toBe(PAGE);
      expect(served(ENGINE_A)).toBe('live');
      expect(compose('ps', '-q').split('\n').filter(Boolean).sort()).toEqual(ids);
      expect(compose('up', '-d')).not.toMatch(/Recreating|Creating|Removing|Stopping/);
      expect(compose('ps', '-q').split('\n').filter(Boolean).sort()).toEqual(ids);
    } finally {
      cleanup(ENGINE_A, {
        containers: [web, client, job].map((c) => `${c}-restored`),
        volumes: [`${volume}-restored`],
        networks: [`${network}-copy`],
      });
      docker(['exec', web, 'sh', '-c', `echo "${PAGE}" > /data/index.html`]);
    }
  });

  it('a drill copy of the stack is not taken for it by Compose', async () => {
    const ids = compose('ps', '-q').split('\n').filter(Boolean).sort();
    const drill = ferry([
      'drill',
      bundle,
      '--probe-in',
      client,
      '--probe',
      'sleep 3; wget -q -O - http://web:8081/',
      '--timeout',
      '60',
    ]);
    let copy = '';
    await waitFor(
      'the drill copy of web',
      () => (copy = docker(['ps', '-q', '--filter', `name=ferry-drill-.*-${web}`])) !== '',
    );
    expect(composeLabels(copy)).toEqual({ project: '', service: '' });
    expect(compose('ps', '-q').split('\n').filter(Boolean).sort()).toEqual(ids);
    const r = await drill;
    expect(r.code, r.stderr).toBe(0);
  });

  it('backup --all puts the running services of the project into one bundle', async () => {
    const store = path.join(dir, 'all');
    const r = await ferry(['--json', 'backup', '--all', '-o', store, '--mkdir', '--compress', 'none']);
    expect(r.code, r.stderr).toBe(0);
    const ours = (
      JSON.parse(r.stdout).results as { container: string; result: { bundle: string; containers: string[] } }[]
    ).filter((x) => x.container.startsWith(`${project}_`));
    expect(ours.map((x) => x.container).sort()).toEqual([client, web].sort()); // job is not running
    expect(new Set(ours.map((x) => x.result.bundle)).size).toBe(1);
  });

  it('an unknown project is not found (exit 5), and the error names the projects there are', async () => {
    const r = await ferry(['backup', '--project', `${project}-nope`, '-o', dir]);
    expect(r.code).toBe(5);
    expect(r.stderr).toMatch(
      new RegExp(`no container of Compose project ${project}-nope[\\s\\S]*projects there: .*${project}`),
    );
    const m = await ferry(['migrate', '--to', ENGINE_B]);
    expect(m.code).toBe(2);
    expect(m.stderr).toMatch(/name at least one container to migrate, or a Compose project with --project/);
  });

  it('migrate --project moves the whole stack to another engine', async () => {
    cleanup(ENGINE_B, { containers: [web, client, job], volumes: [volume], networks: [network] });
    const r = await ferry(['migrate', '--project', project, '--to', ENGINE_B, '--stop-source']);
    expect(r.code, r.stderr).toBe(0);
    expect(inspect('container', web).State.Running).toBe(false);
    // The cutover's last step: the old host's stack goes. (Here it must: the project's network
    // keeps its subnet on B, and two bridges with one subnet on one machine do not route.)
    compose('down', '-v');
    expect(served(ENGINE_B)).toBe(PAGE);
    expect(exists('container', job, ENGINE_B)).toBe(true);
    expect(inspect('volume', volume, ENGINE_B).Labels['com.docker.compose.project']).toBe(project);
  });
});
