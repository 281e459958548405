/**
 * The engine's multiplexed stream format (exec, attach and logs without a TTY): frames of an
 * 8-byte header (stream type, three zero bytes, big-endian payload length) and the payload.
 * Read with async iteration, so a slow consumer pauses the source (dockerode's demuxStream
 * ignores backpressure and recurses once per frame); strict about misaligned frames.
 * See the Engine API notes, section 5.2.
 */
import { once } from 'node:events';

export async function demux(
  src: AsyncIterable<Buffer>,
  out: NodeJS.WritableStream,
  err: NodeJS.WritableStream,
): Promise<void> {
  let buf: Buffer = Buffer.alloc(0);
  const write = async (s: NodeJS.WritableStream, b: Buffer) => {
    const w = s as NodeJS.EventEmitter & { destroyed?: boolean };
    if (w.destroyed) throw new Error('the output was closed');
    // A consumer that gives up destroys its stream: stop then, rather than wait for a drain.
    if (!s.write(b)) await Promise.race([once(w, 'drain'), once(w, 'close')]);
  };
  for await (const chunk of src) {
    buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
    while (buf.length >= 8) {
      const type = buf[0]!;
      if (type > 2 || buf[1] || buf[2] || buf[3]) throw new Error('not a multiplexed stream (Tty:true?)');
      const len = buf.readUInt32BE(4);
      if (buf.length < 8 + len) break;
      const payload = buf.subarray(8, 8 + len);
      buf = buf.subarray(8 + len);
      await write(type === 2 ? err : out, payload);
    }
  }
  if (buf.length) throw new Error('truncated multiplexed frame');
  out.end();
  if (err !== out) err.end();
}
