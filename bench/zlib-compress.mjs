#!/usr/bin/env node
/**
 * Node zlib half of the compression benchmark: compress a file with Node's built-in gzip (or
 * zstd, where this Node has zlib.createZstdCompress) and throw the output away, counting it.
 *
 *   node bench/zlib-compress.mjs gzip|zstd <level> <file>
 *
 * Prints one JSON line on stdout: { in, out }.
 */
import fs from 'node:fs';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';

const [codec, levelArg, file] = process.argv.slice(2);
const level = Number(levelArg);
if (!file || !Number.isInteger(level) || !['gzip', 'zstd'].includes(codec)) {
  process.stderr.write('usage: zlib-compress.mjs gzip|zstd <level> <file>\n');
  process.exit(2);
}
let compressor;
if (codec === 'gzip') {
  compressor = zlib.createGzip({ level });
} else {
  if (typeof zlib.createZstdCompress !== 'function') {
    process.stderr.write(`zlib-compress: this Node (${process.version}) has no built-in zstd\n`);
    process.exit(3);
  }
  compressor = zlib.createZstdCompress({ params: { [zlib.constants.ZSTD_c_compressionLevel]: level } });
}
let inBytes = 0;
let outBytes = 0;
const rs = fs.createReadStream(file, { highWaterMark: 1 << 20 });
rs.on('data', (d) => (inBytes += d.length));
const sink = new Writable({
  highWaterMark: 1 << 20,
  write(chunk, _enc, cb) {
    outBytes += chunk.length;
    cb();
  },
});
await pipeline(rs, compressor, sink);
process.stdout.write(`${JSON.stringify({ in: inBytes, out: outBytes })}\n`);
