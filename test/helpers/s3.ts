/**
 * Looking at the lab's S3 bucket from a test, with the SDK directly (not through ferry): what
 * objects and uploads in progress are under a prefix, and removing them.
 */
import {
  AbortMultipartUploadCommand,
  DeleteObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import { S3 } from './lab.js';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';

let client: S3Client | undefined;
export function s3Admin(): S3Client {
  return (client ??= new S3Client({
    endpoint: S3.endpoint,
    region: S3.region,
    forcePathStyle: true,
    credentials: { accessKeyId: S3.accessKeyId, secretAccessKey: S3.secretAccessKey },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  }));
}

/** Every object key under `prefix/` (any depth), relative to it. */
export async function s3Objects(prefix: string): Promise<string[]> {
  const out: string[] = [];
  let token: string | undefined;
  do {
    const r = await s3Admin().send(
      new ListObjectsV2Command({ Bucket: S3.bucket, Prefix: `${prefix}/`, ContinuationToken: token }),
    );
    for (const o of r.Contents ?? []) out.push(o.Key!.slice(prefix.length + 1));
    token = r.IsTruncated ? r.NextContinuationToken : undefined;
  } while (token);
  return out;
}

/** Every multipart upload in progress under `prefix/`: key (relative) and id. */
export async function s3Uploads(prefix: string): Promise<{ key: string; id: string }[]> {
  const r = await s3Admin().send(new ListMultipartUploadsCommand({ Bucket: S3.bucket, Prefix: `${prefix}/` }));
  return (r.Uploads ?? []).map((u) => ({ key: u.Key!.slice(prefix.length + 1), id: u.UploadId! }));
}

/** Put an object (a planted lock, a stray file). */
export async function s3Put(key: string, body: string | Buffer): Promise<void> {
  await s3Admin().send(new PutObjectCommand({ Bucket: S3.bucket, Key: key, Body: body }));
}

/** Remove one object. */
export async function s3Delete(key: string): Promise<void> {
  await s3Admin().send(new DeleteObjectCommand({ Bucket: S3.bucket, Key: key }));
}

/** Remove everything under `prefix/`: objects and uploads in progress. */
export async function s3Clean(prefix: string): Promise<void> {
  for (const u of await s3Uploads(prefix))
    await s3Admin().send(
      new AbortMultipartUploadCommand({ Bucket: S3.bucket, Key: `${prefix}/${u.key}`, UploadId: u.id }),
    );
  for (const k of await s3Objects(prefix))
    await s3Admin().send(new DeleteObjectCommand({ Bucket: S3.bucket, Key: `${prefix}/${k}` }));
}
