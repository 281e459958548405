import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { CLIENT_MAX_API, compareApi, negotiateApi, type VersionAnswer } from '../../src/engine/api-version.js';

/**
 * `GET /version` answers: docker-20.10, docker-26.1 and podman-4.3 were recorded from the lab's
 * engines; docker-29.0 and podman-5.4 are those answers with the versions those engines report
 * (Docker 29.0: API 1.52, minimum 1.44; Podman 5's compat API: 1.41, minimum 1.24).
 */
const answer = (name: string) =>
  JSON.parse(
    readFileSync(path.join(import.meta.dirname, '..', 'fixtures', 'version', `${name}.json`), 'utf8'),
  ) as VersionAnswer;

describe('negotiateApi: the newest version both sides know, never a fixed one', () => {
  it('Docker 20.10 speaks 1.41', () => {
    expect(negotiateApi(answer('docker-20.10'))).toEqual({ version: 'v1.41', api: '1.41', podman: false });
  });

  it('Docker 26.1 speaks 1.45', () => {
    expect(negotiateApi(answer('docker-26.1'))).toEqual({ version: 'v1.45', api: '1.45', podman: false });
  });

  it('Docker 29.0 (API 1.52, refuses below 1.44) gets ferry newest, which it accepts', () => {
    const n = negotiateApi(answer('docker-29.0'));
    expect(n).toEqual({ version: `v${CLIENT_MAX_API}`, api: CLIENT_MAX_API, podman: false });
    expect(compareApi(n.api, '1.44')).toBeGreaterThanOrEqual(0);
  });

  it('Podman 4 and 5 are recognised and speak 1.41', () => {
    expect(negotiateApi(answer('podman-4.3'))).toEqual({ version: 'v1.41', api: '1.41', podman: true });
    expect(negotiateApi(answer('podman-5.4'))).toEqual({ version: 'v1.41', api: '1.41', podman: true });
  });

  it('an engine whose oldest version is newer than ferry knows gets unversioned requests', () => {
    expect(negotiateApi({ ApiVersion: '1.60', MinAPIVersion: '1.50' })).toEqual({ api: '1.60', podman: false });
  });

  it('compares versions by number, not as text', () => {
    expect(compareApi('1.9', '1.41')).toBe(-1);
    expect(compareApi('1.45', '1.45')).toBe(0);
    expect(compareApi('2.0', '1.52')).toBe(1);
  });
});
