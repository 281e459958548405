/**
 * vitest globalSetup for the e2e project: bring up the lab (engines A, B, C and D, registry, sshd, test
 * images) with .ci/lab.sh, which is idempotent and quick when everything already runs, then the
 * cached PostgreSQL test image. Needs root, as the engines do. At the end, the snapshot images the
 * tests' backups and restores left (ferry/<test container>:<time>) go, on both engines.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import path from 'node:path';

export default function setup() {
  const root = path.resolve(import.meta.dirname, '..', '..');
  execFileSync('sh', [path.join(root, '.ci', 'lab.sh')], { stdio: 'inherit' });
  execFileSync(
    'sh',
    [
      path.join(root, 'test', 'fixtures', 'build-postgres-image.sh'),
      'unix:///var/run/docker-b.sock',
      'unix:///var/run/docker-c.sock',
      'unix:///var/run/docker-d.sock',
    ],
    {
      stdio: 'inherit',
      env: { ...process.env, DOCKER_HOST: 'unix:///var/run/docker.sock' },
    },
  );
  return teardown;
}

/** Test containers are named <prefix>-<6 hex> (helpers/lab.ts uid); their snapshots ferry/<that>[...]:<time>. */
const TEST_SNAPSHOT = /^ferry\/[a-z0-9]+(-[a-z0-9]+)*-[0-9a-f]{6}([-_][a-z0-9_-]+)?:\d{8}T\d{6}Z$/; // Compose names: <project>_<service>_1

function teardown() {
  for (const host of [
    'unix:///var/run/docker.sock',
    'unix:///var/run/docker-b.sock',
    'unix:///var/run/docker-c.sock',
    'unix:///var/run/docker-d.sock',
  ]) {
    const r = spawnSync('docker', ['-H', host, 'images', '--format', '{{.Repository}}:{{.Tag}}'], { encoding: 'utf8' });
    const refs = (r.stdout ?? '').split('\n').filter((x) => TEST_SNAPSHOT.test(x));
    // An image still used by a container is refused and stays.
    if (refs.length) spawnSync('docker', ['-H', host, 'rmi', ...refs], { encoding: 'utf8' });
  }
}
