#!/usr/bin/env node
/**
 * Raw half of the S3 upload benchmark: upload a file's bytes as a plain stream with the AWS SDK's
 * own multipart uploader (@aws-sdk/lib-storage `Upload`, over the @aws-sdk/client-s3 that ferry
 * uses), to the lab's S3 server. No bundle, no engine: what the SDK alone reaches on that server.
 *
 *   node bench/s3-upload.mjs <file> <key>
 *
 * Environment: BENCH_S3_ENDPOINT (http://127.0.0.1:7480), BENCH_S3_BUCKET (ferry-test),
 * BENCH_S3_PART_MIB (8: ferry's part size), BENCH_S3_QUEUE (4: lib-storage's default concurrency),
 * and the AWS standard variables for credentials and region (AWS_ACCESS_KEY_ID, ...).
 * The client is set up as ferry's is (path-style, checksums only where required).
 * On success prints one JSON line on stdout: { bytes (the file's),
 * seconds (from the upload's start to CompleteMultipartUpload's answer), objectBytes (HeadObject's
 * ContentLength afterwards), partMiB, queueSize }.
 */
import fs from 'node:fs';
import { performance } from 'node:perf_hooks';
import { HeadObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';
const [file, key] = process.argv.slice(2);
if (!file || !key) {
  process.stderr.write('usage: s3-upload.mjs <file> <key>\n');
  process.exit(2);
}
const endpoint = process.env.BENCH_S3_ENDPOINT ?? 'http://127.0.0.1:7480';
const Bucket = process.env.BENCH_S3_BUCKET ?? 'ferry-test';
const partMiB = Number(process.env.BENCH_S3_PART_MIB ?? 8);
const queueSize = Number(process.env.BENCH_S3_QUEUE ?? 4);

const client = new S3Client({
  endpoint,
  region: process.env.AWS_REGION ?? 'us-east-1',
  forcePathStyle: true,
  requestChecksumCalculation: 'WHEN_REQUIRED',
  responseChecksumValidation: 'WHEN_REQUIRED',
});

try {
  const bytes = fs.statSync(file).size;
  const body = fs.createReadStream(file, { highWaterMark: 1 << 20 });
  const t0 = performance.now();
  const up = new Upload({
    client,
    params: { Bucket, Key: key, Body: body, ContentType: 'application/x-tar' },
    partSize: partMiB << 20,
    queueSize,
  });
  await up.done();
  const seconds = (performance.now() - t0) / 1000;
  const head = await client.send(new HeadObjectCommand({ Bucket, Key: key }));
  process.stdout.write(`${JSON.stringify({ bytes, seconds, objectBytes: head.ContentLength, partMiB, queueSize })}\n`);
} catch (err) {
  process.stderr.write(`s3-upload: ${err.name ?? 'error'}: ${err.message}\n`);
  process.exitCode = 1;
} finally {
  client.destroy();
}
