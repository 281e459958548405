/**
 * vitest globalSetup for the e2e project: bring up the lab (engines A and B, registry, sshd, test
 * images) with .ci/lab.sh, which is idempotent and quick when everything already runs, then the
 * cached PostgreSQL test image. Needs root, as the engines do.
 */
import { execFileSync } from 'node:child_process';
import path from 'node:path';

export default function setup() {
  const root = path.resolve(import.meta.dirname, '..', '..');
  execFileSync('sh', [path.join(root, '.ci', 'lab.sh')], { stdio: 'inherit' });
  execFileSync('sh', [path.join(root, 'test', 'fixtures', 'build-postgres-image.sh'), 'unix:///var/run/docker-b.sock'], {
    stdio: 'inherit',
    env: { ...process.env, DOCKER_HOST: 'unix:///var/run/docker.sock' },
  });
}
