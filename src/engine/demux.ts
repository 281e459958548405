/**
 * Docker's multiplexed stdout/stderr stream (non-TTY exec/attach), decoded with backpressure and
 * strictly: dockerode's demuxStream ignores backpressure, recurses per frame and passes garbage
 * through. 8-byte header: type (1 stdout, 2 stderr), 3 zero bytes, u32 big-endian length.
 */
import { once } from 'node:events';
import type { Writable } from 'node:stream';

export class DemuxError extends Error {}

export async function demux(src: AsyncIterable<Buffer>, out: Writable, err: Writable): Promise<void> {
  let buf: Buffer = Buffer.alloc(0);
  const write = async (s: Writable, b: Buffer) => {
    if (!s.write(b)) await once(s, 'drain');
  };
  for await (const chunk of src) {
    buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
    while (buf.length >= 8) {
      const type = buf[0]!;
      if (type > 2 || buf[1] || buf[2] || buf[3]) throw new DemuxError('not a multiplexed stream');
      const len = buf.readUInt32BE(4);
      if (buf.length < 8 + len) break;
      const payload = buf.subarray(8, 8 + len);
      buf = buf.subarray(8 + len);
      await write(type === 2 ? err : out, payload);
    }
  }
  if (buf.length) throw new DemuxError('truncated multiplexed frame');
}
