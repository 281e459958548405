import { describe, expect, it } from 'vitest';
import { inPlaceVolumePath } from '../../src/data/volumes.js';

const vol = (source: string, destination: string) => ({ type: 'volume', source, destination });

describe('inPlaceVolumePath', () => {
  it('reads a volume from its container where nothing else is mounted inside it', () => {
    const spec = {
      mounts: [
        vol('data', '/var/lib/postgresql/data'),
        vol('logs', '/var/log'),
        { type: 'bind', source: '/etc/x', destination: '/etc/x' },
      ],
      hostConfig: {},
    };
    expect(inPlaceVolumePath(spec, 'data')).toBe('/var/lib/postgresql/data');
    expect(inPlaceVolumePath(spec, 'logs')).toBe('/var/log');
  });

  it('uses a holder when another mount lies inside the volume (its content would come along)', () => {
    expect(
      inPlaceVolumePath({ mounts: [vol('data', '/srv'), vol('cache', '/srv/cache')], hostConfig: {} }, 'data'),
    ).toBeUndefined();
    expect(
      inPlaceVolumePath(
        { mounts: [vol('data', '/srv/'), { type: 'bind', source: '/h', destination: '/srv/conf' }], hostConfig: {} },
        'data',
      ),
    ).toBeUndefined();
    expect(
      inPlaceVolumePath(
        { mounts: [vol('data', '/srv'), { type: 'tmpfs', destination: '/srv/tmp' }], hostConfig: {} },
        'data',
      ),
    ).toBeUndefined();
    expect(
      inPlaceVolumePath({ mounts: [vol('data', '/srv')], hostConfig: { Tmpfs: { '/srv/run': 'size=1m' } } }, 'data'),
    ).toBeUndefined();
    // The inner one itself has nothing inside it.
    expect(
      inPlaceVolumePath({ mounts: [vol('data', '/srv'), vol('cache', '/srv/cache')], hostConfig: {} }, 'cache'),
    ).toBe('/srv/cache');
  });

  it('is not fooled by a sibling whose name starts the same', () => {
    expect(inPlaceVolumePath({ mounts: [vol('data', '/srv'), vol('other', '/srv2')], hostConfig: {} }, 'data')).toBe(
      '/srv',
    );
  });

  it('uses a holder for a volume mounted twice, or not mounted by this container', () => {
    expect(
      inPlaceVolumePath({ mounts: [vol('data', '/a'), vol('data', '/b')], hostConfig: {} }, 'data'),
    ).toBeUndefined();
    expect(inPlaceVolumePath({ mounts: [vol('data', '/a')], hostConfig: {} }, 'nope')).toBeUndefined();
    expect(inPlaceVolumePath({ mounts: [vol('data', 'relative')], hostConfig: {} }, 'data')).toBeUndefined();
  });
});
