/**
 * Bundles in an S3-compatible object store (AWS S3, Ceph RGW, MinIO, Garage, R2, B2, Wasabi):
 * `s3://bucket/prefix`, or `s3+http://host:port/bucket/prefix` (`s3+https://`) naming the
 * endpoint in the URL. A bundle is the object `<prefix>/<name>`.
 *
 * Where the server is: the URL's host (s3+http/s3+https), else `--s3-endpoint`, else the SDK's
 * standard variables AWS_ENDPOINT_URL_S3 and AWS_ENDPOINT_URL, else AWS. Credentials and region
 * come from the AWS standard chain (environment, ~/.aws/credentials and config, AWS_PROFILE);
 * without a region, us-east-1 (what S3-compatibles expect). Addressing is path-style
 * (`host/bucket/key`) where the endpoint is an IP address or localhost, or when asked
 * (`--s3-path-style`); virtual-hosted otherwise.
 *
 * Writing: one multipart upload straight to the final key, streamed: nothing is at that name
 * until CompleteMultipartUpload, which is atomic; abort() (an error, SIGINT, SIGTERM) aborts the
 * upload, so no parts are left behind. Its length is not known in advance, so parts grow
 * (partSize): small ones keep memory flat for the usual sizes, and the 10,000-part limit still
 * holds up to 5 TiB. The upload's key claims the name: create() chooses a free one under the
 * store's lock, counting uploads in progress (of any host) as taken.
 *
 * Locking (lock.ts): the lock object `<prefix>/.ferry.lock` is created with a conditional PUT
 * (If-None-Match: *), refreshed (re-PUT with If-Match: its ETag) while held, and taken over once
 * stale (its Last-Modified is older than FOREIGN_STALE_MS). A server that ignores the condition is
 * found out by a probe before the first lock, and refused: two runs could both think they hold it.
 */
import { randomBytes } from 'node:crypto';
import { isIP } from 'node:net';
import { Readable } from 'node:stream';
import type * as S3Sdk from '@aws-sdk/client-s3';
import type { CompletedPart } from '@aws-sdk/client-s3';
import { BundleError, EXIT, FerryError, IoError, NotFoundError, UsageError } from '../errors.js';
import { acquireStoreLock, DEFAULT_LOCK_TIMEOUT_S, type LockDir, type LockOptions, type StoreLock } from './lock.js';
import { byteBounds, tempName, uniqueBundleName } from './local.js';
import {
  checkBundleName,
  isBundleName,
  type BundleInfo,
  type ByteRange,
  type CreateOptions,
  type OpenedBundle,
  type Store,
  type StoreCapabilities,
} from './store.js';
import type { BundleSink } from './transport.js';

/**
 * The AWS SDK is loaded when the first client is made (S3Store.client()), not when ferry starts:
 * importing it costs every run a third of a second or more, and most runs use no s3 store. The
 * classes below are the SDK's own, looked up as an instance is made; every command is made for a
 * client, so after client() has loaded the SDK.
 */
let sdk: typeof S3Sdk | undefined;
async function loadSdk(): Promise<typeof S3Sdk> {
  return (sdk ??= await import('@aws-sdk/client-s3'));
}
function sdkClass<K extends keyof typeof S3Sdk>(name: K): (typeof S3Sdk)[K] {
  const construct = (_: unknown, args: unknown[]): object => {
    if (!sdk) throw new Error(`the S3 SDK is used (${name}) before S3Store.client() loaded it`);
    return new (sdk[name] as new (...a: unknown[]) => object)(...args);
  };
  return new Proxy(function () {}, { construct }) as unknown as (typeof S3Sdk)[K];
}
const S3Client = sdkClass('S3Client');
type S3Client = S3Sdk.S3Client;
const AbortMultipartUploadCommand = sdkClass('AbortMultipartUploadCommand');
const CompleteMultipartUploadCommand = sdkClass('CompleteMultipartUploadCommand');
const CopyObjectCommand = sdkClass('CopyObjectCommand');
const CreateMultipartUploadCommand = sdkClass('CreateMultipartUploadCommand');
const DeleteObjectCommand = sdkClass('DeleteObjectCommand');
const GetObjectCommand = sdkClass('GetObjectCommand');
const HeadBucketCommand = sdkClass('HeadBucketCommand');
const HeadObjectCommand = sdkClass('HeadObjectCommand');
const ListMultipartUploadsCommand = sdkClass('ListMultipartUploadsCommand');
const ListObjectsV2Command = sdkClass('ListObjectsV2Command');
const PutObjectCommand = sdkClass('PutObjectCommand');
const UploadPartCommand = sdkClass('UploadPartCommand');
const UploadPartCopyCommand = sdkClass('UploadPartCopyCommand');

const MiB = 1 << 20;
/** Parts start at this size... */
export const FIRST_PART_SIZE = 8 * MiB;
/** ...and double every this many parts... */
export const PARTS_PER_STEP = 1000;
/** ...up to this size (a part must be at most 5 GiB; a Buffer at most 4 GiB). */
export const MAX_PART_SIZE = 3072 * MiB;
/** S3's limit on the parts of one upload. */
export const MAX_PARTS = 10_000;
/** Bytes of parts in flight at once (at least one part). */
const INFLIGHT_BYTES = 24 * MiB;
/** S3's limit on one CopyObject; bigger objects are copied in parts. */
const MAX_SINGLE_COPY = 5 * 1024 * MiB;
const COPY_PART = 512 * MiB;
/** An upload in progress this old was left by a run that died (kill -9, a crashed host): the next backup aborts it. */
export const STALE_UPLOAD_MS = 3 * 24 * 3600 * 1000;

/** The size of part `n` (1-based) of an upload of unknown length. */
export function partSize(n: number): number {
  return Math.min(MAX_PART_SIZE, FIRST_PART_SIZE * 2 ** Math.floor((n - 1) / PARTS_PER_STEP));
}

/** Settings of the run for S3 stores (--s3-endpoint, --s3-path-style). */
export interface S3Settings {
  endpoint?: string;
  pathStyle?: boolean;
}

export interface S3Location {
  bucket: string;
  /** The key prefix, without leading or trailing `/` ('' for the bucket's root). */
  prefix: string;
  /** The endpoint named in the URL (s3+http, s3+https). */
  endpoint?: string;
}

const USAGE = 's3://bucket/prefix, s3+http://host:port/bucket/prefix';

function parseUrl(url: string): URL {
  try {
    return new URL(url);
  } catch {
    throw new UsageError(`cannot parse ${url}`, `use ${USAGE}`);
  }
}

/** `s3://bucket/a/b`, `s3+https://host:9000/bucket/a/b` -> bucket, prefix and endpoint. */
export function parseS3Url(url: string): S3Location {
  const u = parseUrl(url);
  const scheme = u.protocol.slice(0, -1).toLowerCase();
  const segs = decodeURIComponent(u.pathname)
    .split('/')
    .filter((s) => s !== '');
  let bucket: string | undefined;
  let endpoint: string | undefined;
  if (scheme === 's3') bucket = u.hostname;
  else if (scheme === 's3+http' || scheme === 's3+https') {
    if (!u.host) throw new UsageError(`${url} names no server`, 'use s3+http://host:port/bucket/prefix');
    endpoint = `${scheme.slice(3)}://${u.host}`;
    bucket = segs.shift();
  } else throw new UsageError(`cannot parse ${url}`, `use ${USAGE}`);
  if (!bucket) throw new UsageError(`${url} names no bucket`, `use ${USAGE}`);
  if (segs.some((s) => s === '.' || s === '..'))
    throw new UsageError(`${url}: . and .. are not allowed in an S3 prefix`);
  return { bucket, prefix: segs.join('/'), ...(endpoint ? { endpoint } : {}) };
}

/** A URL naming one bundle -> its store's URL and the bundle's name (the last path segment). */
export function splitS3Url(url: string): { store: string; name: string } {
  const u = parseUrl(url);
  const path = u.pathname.replace(/\/+$/, '');
  const i = path.lastIndexOf('/');
  const name = decodeURIComponent(path.slice(i + 1));
  if (i < 0 || !name) throw new UsageError(`${url} names no bundle`, 'use s3://bucket/prefix/name.tar');
  u.pathname = path.slice(0, i);
  u.search = '';
  u.username = '';
  u.password = '';
  const store = u.toString().replace(/\/$/, '');
  parseS3Url(store); // names a bucket
  return { store, name };
}

/** Path-style addressing: asked for, or an endpoint that is an IP address or localhost (no DNS names per bucket). */
export function wantsPathStyle(endpoint: string | undefined, asked?: boolean): boolean {
  if (asked) return true;
  if (!endpoint) return false;
  let host: string;
  try {
    host = new URL(endpoint).hostname.replace(/^\[|\]$/g, '');
  } catch {
    return false;
  }
  return isIP(host) !== 0 || host === 'localhost';
}

/** The endpoint to use: the URL's, --s3-endpoint, AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL; undefined for AWS itself. */
export function resolveEndpoint(loc: S3Location, settings: S3Settings, env: NodeJS.ProcessEnv): string | undefined {
  return loc.endpoint ?? settings.endpoint ?? (env.AWS_ENDPOINT_URL_S3 || env.AWS_ENDPOINT_URL || undefined);
}

/** What an S3 failure was, as a ferry error naming what failed and what to do. */
export function s3Error(err: unknown, what: string, where: { bucket: string; endpoint?: string }): FerryError {
  if (err instanceof FerryError) return err;
  const e = err as {
    name?: string;
    code?: string;
    message?: string;
    $metadata?: { httpStatusCode?: number };
  };
  const status = e?.$metadata?.httpStatusCode;
  const name = e?.name ?? '';
  const server = where.endpoint ?? 'AWS S3';
  const msg = e?.message && e.message !== 'UnknownError' && e.message !== name ? `: ${e.message}` : '';
  if (name === 'NoSuchBucket')
    return new NotFoundError(
      `${what}: there is no bucket ${where.bucket} at ${server}`,
      'check the bucket name, the endpoint (--s3-endpoint, AWS_ENDPOINT_URL_S3) and the region (AWS_REGION), or create the bucket',
      err,
    );
  if (name === 'NoSuchKey' || name === 'NotFound' || status === 404)
    return new NotFoundError(`${what}: not found`, undefined, err);
  if (
    name === 'CredentialsProviderError' ||
    name === 'InvalidAccessKeyId' ||
    name === 'SignatureDoesNotMatch' ||
    name === 'InvalidToken' ||
    name === 'ExpiredToken' ||
    name === 'TokenRefreshRequired'
  )
    return new FerryError(
      'STORE_CREDENTIALS',
      EXIT.IO,
      `${what}: the S3 credentials were refused or missing (${name})`,
      {
        hint: 'set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with ~/.aws/credentials, to keys valid at that server',
        cause: err,
      },
    );
  if (name === 'AccessDenied' || name === 'AllAccessDisabled' || status === 403)
    return new FerryError(
      'STORE_DENIED',
      EXIT.IO,
      `${what}: access denied by ${server}${name && name !== 'AccessDenied' ? ` (${name})` : ''}`,
      {
        hint: `give these credentials read, write, list and delete rights on bucket ${where.bucket} (or check that they are the keys you meant: AWS_PROFILE, AWS_ACCESS_KEY_ID)`,
        cause: err,
      },
    );
  const net = [
    'ECONNREFUSED',
    'ECONNRESET',
    'ENOTFOUND',
    'EAI_AGAIN',
    'ETIMEDOUT',
    'EHOSTUNREACH',
    'ENETUNREACH',
    'EPIPE',
  ];
  if (net.includes(e?.code ?? '') || name === 'TimeoutError' || name === 'RequestTimeout')
    return new FerryError('STORE_NETWORK', EXIT.IO, `${what}: cannot reach ${server} (${e.code ?? name})`, {
      hint: 'check the endpoint (s3+http://host:port/..., --s3-endpoint, AWS_ENDPOINT_URL_S3) and the network; nothing was left half-written',
      cause: err,
    });
  return new FerryError('IO', EXIT.IO, `${what}: ${name || 'S3 error'}${status ? ` (HTTP ${status})` : ''}${msg}`, {
    cause: err,
  });
}

function noBucket(err: unknown): boolean {
  return (err as { name?: string })?.name === 'NoSuchBucket';
}

function isStatus(err: unknown, ...codes: number[]): boolean {
  return codes.includes((err as { $metadata?: { httpStatusCode?: number } })?.$metadata?.httpStatusCode ?? 0);
}

/** The first ranged GET of a read: enough for a manifest (`ls` reads no more)... */
export const FIRST_READ_WINDOW = 1 << 20;
/**
 * ...then windows double up to this size: few requests, since each costs the server and the
 * client CPU on top of its round trip (docs/performance.md, "Restore from S3, by hand")...
 */
export const MAX_READ_WINDOW = 256 << 20;
/**
 * ...and once the reader reads past the first window, this many windows are asked for ahead of
 * the one it reads, so the next one's round trip and the server's start overlap the one read. A
 * window waiting its turn holds its connection's buffers only: node stops reading the socket of a
 * response nobody reads, so memory stays flat whatever the bundle's or the window's size.
 */
export const READ_AHEAD = 1;
/**
 * Past the first window, what a socket delivers (64 KiB at a time) is given on in chunks of this
 * size, as a local file's read stream does: sixteen times fewer chunks through the tar parser,
 * the checksums, the pipes and the garbage collector, for one copy.
 */
export const READ_CHUNK = 1 << 20;
/** A window cut short by the network is asked for again from where it stopped, this many times. */
const READ_RETRIES = 3;

/** GET `window` bytes of the object from `pos` on (clipped to its end); `signal` aborts the request and its body. */
export type WindowFetch = (pos: number, window: number, signal: AbortSignal) => Promise<Readable>;

/**
 * The bytes `from`..`end` (inclusive) of an object, in order, as ranged GETs of growing windows,
 * `first` being the body of the first one (`from` .. `from + FIRST_READ_WINDOW - 1`). A reader
 * that stops within the first window (a manifest) costs no second request; one that reads on has
 * `ahead` windows asked for ahead of it; a connection lost half-way costs a retry of the rest of
 * one window, not of the whole bundle. When `signal` aborts, or the reader stops, every request
 * still open is aborted and no other is made.
 */
export async function* readWindows(
  first: Readable,
  from: number,
  end: number,
  fetch: WindowFetch,
  opts: { ahead?: number; signal?: AbortSignal } = {},
): AsyncGenerator<Buffer> {
  const ahead = opts.ahead ?? READ_AHEAD;
  const ac = new AbortController(); // aborts what is in flight when the read ends, however it ends
  const onAbort = () => ac.abort(opts.signal!.reason);
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  interface Window {
    start: number;
    last: number;
    body: Promise<Readable>;
  }
  const ask = (start: number, last: number): Promise<Readable> => {
    if (ac.signal.aborted) return Promise.reject(ac.signal.reason as Error);
    const body = fetch(start, last - start + 1, ac.signal);
    body.catch(() => {}); // seen when its turn comes
    return body;
  };
  const queue: Window[] = [
    { start: from, last: Math.min(end, from + FIRST_READ_WINDOW - 1), body: Promise.resolve(first) },
  ];
  let next = queue[0]!.last + 1; // where the next window to ask for starts
  let win = Math.min(FIRST_READ_WINDOW * 2, MAX_READ_WINDOW);
  const plan = () => {
    while (next <= end && queue.length < 1 + ahead) {
      const last = Math.min(end, next + win - 1);
      queue.push({ start: next, last, body: ask(next, last) });
      next = last + 1;
      win = Math.min(win * 2, MAX_READ_WINDOW);
    }
  };
  // Chunks past the first window are gathered into READ_CHUNK bytes before they are given on.
  let acc: Buffer | undefined;
  let filled = 0;
  let pos = from;
  let retries = 0;
  let reading: Readable | undefined; // a body being read stops when the read is aborted
  ac.signal.addEventListener('abort', () => reading?.destroy(), { once: true });
  try {
    if (from > end) return;
    for (let w = queue[0]; w; w = queue[0]) {
      let body: Readable | undefined;
      try {
        body = reading = await w.body;
        if (ac.signal.aborted) throw ac.signal.reason;
        const at = pos;
        const gather = w.start > from;
        for await (const c of body) {
          const chunk = c as Buffer;
          pos += chunk.length;
          if (pos > w.last + 1) throw new IoError(`the server sent more than bytes ${w.start}-${w.last}`);
          if (!gather) {
            yield chunk;
            continue;
          }
          for (let off = 0; off < chunk.length;) {
            if (!acc && chunk.length - off >= READ_CHUNK) {
              yield off === 0 ? chunk : chunk.subarray(off); // big enough as it is
              break;
            }
            acc ??= Buffer.allocUnsafeSlow(READ_CHUNK);
            const n = chunk.copy(acc, filled, off);
            off += n;
            filled += n;
            if (filled === READ_CHUNK) {
              const full = acc;
              acc = undefined;
              filled = 0;
              yield full;
            }
          }
        }
        if (ac.signal.aborted) throw ac.signal.reason;
        if (pos === at) throw new IoError(`the server sent nothing from byte ${pos} on`);
        retries = 0;
        if (pos <= w.last) {
          w.body = ask(pos, w.last); // cut short without an error: the rest of it
          continue;
        }
        queue.shift();
        plan();
      } catch (err) {
        if (ac.signal.aborted) throw ac.signal.reason;
        if (err instanceof FerryError || ++retries > READ_RETRIES) throw err;
        w.body = ask(pos, w.last);
      } finally {
        body?.destroy();
        reading = undefined;
      }
    }
    if (acc && filled) yield acc.subarray(0, filled);
  } finally {
    opts.signal?.removeEventListener('abort', onAbort);
    if (!ac.signal.aborted) ac.abort(new IoError('the read ended'));
    for (const w of queue)
      void w.body.then(
        (b) => b.destroy(),
        () => {},
      );
  }
}

/** Whether a server honours If-None-Match: * on PUT, per endpoint and bucket (asked once per run). */
const conditionalPut = new Map<string, Promise<boolean>>();

class S3Sink implements BundleSink {
  readonly seekable = false;
  position = 0;
  private readonly parts: CompletedPart[] = [];
  private readonly inflight = new Set<Promise<void>>();
  private inflightBytes = 0;
  private buf: Buffer;
  /** Part buffers whose upload is done, to fill again: memory stays what is in flight, not what awaits collection. */
  private readonly spare: Buffer[] = [];
  private fill = 0;
  private partNo = 1;
  private failed?: Error;
  private done = false;
  private readonly ac = new AbortController();

  constructor(
    private readonly store: S3Store,
    private readonly client: S3Client,
    private readonly key: string,
    private readonly uploadId: string,
    readonly name: string,
    readonly location: string,
  ) {
    this.buf = Buffer.allocUnsafe(partSize(1));
  }

  async write(chunk: Buffer): Promise<void> {
    if (this.done) throw new Error(`${this.location}: write after commit or abort`);
    this.position += chunk.length;
    let off = 0;
    while (off < chunk.length) {
      if (this.failed) throw this.failed;
      const n = chunk.copy(this.buf, this.fill, off);
      this.fill += n;
      off += n;
      if (this.fill === this.buf.length) await this.flushPart();
    }
  }

  async writeAt(): Promise<void> {
    throw new UsageError(`${this.location}: an object upload cannot patch bytes already written`);
  }

  /** Send the part filled so far; wait while too many bytes are in flight. */
  private async flushPart(): Promise<void> {
    const full = this.buf;
    const body = this.fill === full.length ? full : full.subarray(0, this.fill);
    const n = this.partNo++;
    if (n > MAX_PARTS) {
      this.failed = new UsageError(`${this.location}: the bundle is larger than an S3 object can be (5 TiB)`);
      throw this.failed;
    }
    this.fill = 0;
    this.buf = Buffer.allocUnsafe(0);
    const size = body.length;
    this.inflightBytes += size;
    const p = this.client
      .send(
        new UploadPartCommand({
          Bucket: this.store.loc.bucket,
          Key: this.key,
          UploadId: this.uploadId,
          PartNumber: n,
          Body: body,
          ContentLength: size,
        }),
        { abortSignal: this.ac.signal },
      )
      .then(
        (r) => void this.parts.push({ PartNumber: n, ETag: r.ETag }),
        (err: unknown) => {
          this.failed ??= this.store.error(err, `upload part ${n} of ${this.location}`);
        },
      )
      .finally(() => {
        this.inflightBytes -= size;
        this.inflight.delete(p);
        if (!this.done && this.spare.length < 2) this.spare.push(full);
      });
    this.inflight.add(p);
    // Keep at most INFLIGHT_BYTES in flight (at least one part), so memory stays flat.
    while (this.inflight.size > 0 && this.inflightBytes + partSize(this.partNo) > Math.max(INFLIGHT_BYTES, size))
      await Promise.race(this.inflight);
    if (this.failed) throw this.failed;
    this.buf = this.takeBuffer(partSize(this.partNo));
  }

  private takeBuffer(size: number): Buffer {
    let b: Buffer | undefined;
    while ((b = this.spare.pop())) if (b.length === size) return b;
    return Buffer.allocUnsafe(size);
  }

  async commit(): Promise<void> {
    if (this.done) throw new Error(`${this.location}: already committed or aborted`);
    try {
      // The last part may be short (or empty: a multipart upload needs one part).
      if (this.fill > 0 || this.partNo === 1) await this.flushPart();
      while (this.inflight.size) await Promise.race(this.inflight);
      if (this.failed) throw this.failed;
      this.parts.sort((a, b) => a.PartNumber! - b.PartNumber!);
      await this.client
        .send(
          new CompleteMultipartUploadCommand({
            Bucket: this.store.loc.bucket,
            Key: this.key,
            UploadId: this.uploadId,
            MultipartUpload: { Parts: this.parts },
          }),
        )
        .catch((err: unknown) => {
          throw this.store.error(err, `complete the upload of ${this.location}`);
        });
      this.done = true;
      this.buf = Buffer.allocUnsafe(0);
      this.spare.length = 0;
    } catch (err) {
      await this.abort();
      throw err;
    }
  }

  async abort(): Promise<void> {
    if (this.done) return;
    this.done = true;
    this.buf = Buffer.allocUnsafe(0);
    this.spare.length = 0;
    this.ac.abort();
    await Promise.allSettled([...this.inflight]);
    // Aborting frees every part uploaded; one still arriving could survive it, so abort until
    // the upload is gone (S3's own advice), a few times at most.
    for (let i = 0; i < 3; i++) {
      try {
        await this.client.send(
          new AbortMultipartUploadCommand({ Bucket: this.store.loc.bucket, Key: this.key, UploadId: this.uploadId }),
        );
      } catch (err) {
        if (isStatus(err, 404) || (err as { name?: string }).name === 'NoSuchUpload') return;
        if (i === 2) throw this.store.error(err, `abort the upload of ${this.location}`);
        continue;
      }
      if (!(await this.store.uploadAlive(this.key, this.uploadId).catch(() => false))) return;
    }
  }
}

/** A store in an S3 bucket, under a key prefix. */
export class S3Store implements Store {
  readonly capabilities: StoreCapabilities = {
    seekable: false,
    rangeReads: true,
    rereadable: true,
    rewindable: false,
    lockable: true,
    listable: true,
    // CompleteMultipartUpload makes the whole object appear at once, or nothing.
    atomicCommit: true,
    // Once S3 acknowledges an object it is stored durably (the server's redundancy decides how).
    durableCommit: true,
  };
  readonly loc: S3Location;
  readonly endpoint?: string;
  private readonly pathStyle: boolean;
  private readonly lockOptions: LockOptions;
  private clientP?: Promise<S3Client>;
  private readonly base: string;

  constructor(
    url: string,
    settings: S3Settings = {},
    opts: { lock?: Partial<LockOptions> } = {},
    private readonly env: NodeJS.ProcessEnv = process.env,
  ) {
    this.loc = parseS3Url(url);
    this.endpoint = resolveEndpoint(this.loc, settings, env);
    this.pathStyle = wantsPathStyle(this.endpoint, settings.pathStyle || env.FERRY_S3_PATH_STYLE === '1');
    this.lockOptions = { timeoutMs: DEFAULT_LOCK_TIMEOUT_S * 1000, ...opts.lock };
    this.base = this.loc.endpoint
      ? `s3+${this.loc.endpoint.replace(/\/+$/, '')}/${this.loc.bucket}`
      : `s3://${this.loc.bucket}`;
  }

  describe(name?: string): string {
    const p = this.loc.prefix ? `/${this.loc.prefix}` : '';
    return name === undefined ? `${this.base}${p}` : `${this.base}${p}/${name}`;
  }

  key(name: string): string {
    return this.loc.prefix ? `${this.loc.prefix}/${name}` : name;
  }

  private get listPrefix(): string {
    return this.loc.prefix ? `${this.loc.prefix}/` : '';
  }

  error(err: unknown, what: string): FerryError {
    return s3Error(err, what, { bucket: this.loc.bucket, ...(this.endpoint ? { endpoint: this.endpoint } : {}) });
  }

  /** The client, made on first use: the region from the AWS chain, else us-east-1. */
  client(): Promise<S3Client> {
    return (this.clientP ??= (async () => {
      // The SDK warns on stderr that it will want Node 22 from 2027; ferry supports Node 20.
      this.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
      await loadSdk();
      const common = {
        ...(this.endpoint ? { endpoint: this.endpoint } : {}),
        forcePathStyle: this.pathStyle,
        followRegionRedirects: true,
        // Newer SDKs add checksums that S3-compatibles (Ceph RGW) reject on streamed bodies.
        requestChecksumCalculation: 'WHEN_REQUIRED' as const,
        responseChecksumValidation: 'WHEN_REQUIRED' as const,
      };
      const c = new S3Client(common);
      try {
        await c.config.region();
        return c;
      } catch {
        c.destroy();
        return new S3Client({ ...common, region: 'us-east-1' });
      }
    })());
  }

  async exists(): Promise<boolean> {
    const c = await this.client();
    try {
      if (!this.loc.prefix) {
        await c.send(new HeadBucketCommand({ Bucket: this.loc.bucket }));
        return true;
      }
      const r = await c.send(
        new ListObjectsV2Command({ Bucket: this.loc.bucket, Prefix: this.listPrefix, MaxKeys: 1 }),
      );
      return (r.KeyCount ?? r.Contents?.length ?? 0) > 0;
    } catch (err) {
      const fe = this.error(err, `look for ${this.describe()}`);
      if (fe instanceof NotFoundError) return false;
      throw fe;
    }
  }

  /** The objects directly under the prefix (names relative to it), every page. */
  private async objects(): Promise<{ name: string; size: number; mtime: Date }[]> {
    const c = await this.client();
    const out: { name: string; size: number; mtime: Date }[] = [];
    let token: string | undefined;
    do {
      const r = await c
        .send(
          new ListObjectsV2Command({
            Bucket: this.loc.bucket,
            Prefix: this.listPrefix,
            Delimiter: '/',
            ...(token ? { ContinuationToken: token } : {}),
          }),
        )
        .catch((err: unknown) => {
          throw this.error(err, `list ${this.describe()}`);
        });
      for (const o of r.Contents ?? [])
        if (o.Key)
          out.push({
            name: o.Key.slice(this.listPrefix.length),
            size: o.Size ?? 0,
            mtime: o.LastModified ?? new Date(0),
          });
      token = r.IsTruncated ? r.NextContinuationToken : undefined;
    } while (token);
    return out;
  }

  /** Uploads in progress directly under the prefix. */
  private async uploads(): Promise<{ name: string; key: string; id: string; initiated?: Date }[]> {
    const c = await this.client();
    const out: { name: string; key: string; id: string; initiated?: Date }[] = [];
    let keyMarker: string | undefined;
    let idMarker: string | undefined;
    for (;;) {
      const r = await c
        .send(
          new ListMultipartUploadsCommand({
            Bucket: this.loc.bucket,
            Prefix: this.listPrefix,
            Delimiter: '/',
            ...(keyMarker ? { KeyMarker: keyMarker } : {}),
            ...(idMarker ? { UploadIdMarker: idMarker } : {}),
          }),
        )
        .catch((err: unknown) => {
          throw this.error(err, `list the uploads in progress in ${this.describe()}`);
        });
      for (const u of r.Uploads ?? [])
        if (u.Key && u.UploadId)
          out.push({
            name: u.Key.slice(this.listPrefix.length),
            key: u.Key,
            id: u.UploadId,
            ...(u.Initiated ? { initiated: u.Initiated } : {}),
          });
      if (!r.IsTruncated || (!r.NextKeyMarker && !r.NextUploadIdMarker)) break;
      keyMarker = r.NextKeyMarker;
      idMarker = r.NextUploadIdMarker;
    }
    return out;
  }

  /** Whether an upload is still in progress (not completed, not aborted). */
  async uploadAlive(key: string, id: string): Promise<boolean> {
    return (await this.uploads()).some((u) => u.key === key && u.id === id);
  }

  async lock(opts: LockOptions): Promise<StoreLock> {
    await this.checkConditionalPut();
    return acquireStoreLock(this.lockDir(await this.client()), opts);
  }

  /**
   * The lock needs a PUT that fails when the object exists. Ask the server once: PUT a probe
   * twice with If-None-Match: *; the second must be refused (412).
   */
  private checkConditionalPut(): Promise<void> {
    const id = `${this.endpoint ?? 'aws'} ${this.loc.bucket}`;
    let p = conditionalPut.get(id);
    if (!p) {
      p = (async () => {
        const c = await this.client();
        const key = this.key(`.ferry-probe-${randomBytes(6).toString('hex')}`);
        const put = () =>
          c.send(new PutObjectCommand({ Bucket: this.loc.bucket, Key: key, Body: 'probe', IfNoneMatch: '*' }));
        try {
          await put().catch((err: unknown) => {
            throw this.error(err, `write to ${this.describe()}`);
          });
          try {
            await put();
            return false;
          } catch (err) {
            if (isStatus(err, 412)) return true;
            throw this.error(err, `write to ${this.describe()}`);
          }
        } finally {
          await c.send(new DeleteObjectCommand({ Bucket: this.loc.bucket, Key: key })).catch(() => {});
        }
      })();
      conditionalPut.set(id, p);
      p.catch(() => conditionalPut.delete(id));
    }
    return p.then((ok) => {
      if (!ok)
        throw new UsageError(
          `${this.endpoint ?? 'this S3 server'} ignores If-None-Match on PUT: ferry cannot lock ${this.describe()} safely`,
          'use an S3 server that supports conditional writes (AWS S3, Ceph RGW, MinIO, R2 do), or write each host to its own prefix',
        );
    });
  }

  /** The store lock's operations on objects under the prefix (see lock.ts). */
  private lockDir(c: S3Client): LockDir {
    const etags = new Map<string, { etag: string; content: string; bare?: boolean }>();
    const Bucket = this.loc.bucket;
    return {
      name: this.describe(),
      where: (file) => this.describe(file),
      create: async (file, content) => {
        try {
          const r = await c.send(
            new PutObjectCommand({ Bucket, Key: this.key(file), Body: content, IfNoneMatch: '*' }),
          );
          if (r.ETag) etags.set(file, { etag: r.ETag, content });
          return true;
        } catch (err) {
          // 412: it exists; 409: another conditional PUT of it is under way.
          if (isStatus(err, 412, 409)) return false;
          throw this.error(err, `create ${this.describe(file)}`);
        }
      },
      read: async (file) => {
        try {
          const r = await c.send(new GetObjectCommand({ Bucket, Key: this.key(file) }));
          const raw = (await r.Body?.transformToString('utf8')) ?? '';
          return { raw, mtimeMs: r.LastModified?.getTime() ?? 0 };
        } catch (err) {
          if (isStatus(err, 404)) return undefined;
          throw this.error(err, `read ${this.describe(file)}`);
        }
      },
      remove: async (file) => {
        await c.send(new DeleteObjectCommand({ Bucket, Key: this.key(file) })).catch((err: unknown) => {
          if (!isStatus(err, 404)) throw this.error(err, `remove ${this.describe(file)}`);
        });
      },
      // Objects have no mtime to set: write the same content again, only if it is still ours.
      // Ceph RGW (16) matches If-Match on PUT against the ETag without its quotes, AWS with
      // them: a PUT refused in one form is tried in the other (neither matches another's ETag).
      touch: async (file) => {
        const mine = etags.get(file);
        if (!mine) return;
        const put = (etag: string) =>
          c.send(new PutObjectCommand({ Bucket, Key: this.key(file), Body: mine.content, IfMatch: etag }));
        const bare = mine.etag.replace(/^"|"$/g, '');
        const forms = mine.bare ? [bare, `"${bare}"`] : [`"${bare}"`, bare];
        for (const [i, etag] of forms.entries()) {
          try {
            const r = await put(etag);
            if (r.ETag) mine.etag = r.ETag;
            mine.bare = etag === bare;
            return;
          } catch (err) {
            if (!isStatus(err, 412) || i === forms.length - 1) throw err;
          }
        }
      },
    };
  }

  async create(name: string, opts: CreateOptions = {}): Promise<BundleSink> {
    checkBundleName(name);
    if (opts.replace) return this.startUpload(name);
    // Choose a free name and claim it with the upload, under the lock: an upload in progress
    // (of any run, on any host) holds its name.
    const lock = await this.lock({
      ...this.lockOptions,
      purpose: this.lockOptions.purpose ?? 'backup: choosing a bundle name',
    });
    try {
      const [objects, uploads] = await Promise.all([this.objects(), this.uploads()]);
      const now = Date.now();
      const live = [];
      for (const u of uploads) {
        if (u.initiated && now - u.initiated.getTime() > STALE_UPLOAD_MS) {
          const c = await this.client();
          await c
            .send(new AbortMultipartUploadCommand({ Bucket: this.loc.bucket, Key: u.key, UploadId: u.id }))
            .catch(() => {});
        } else live.push(u);
      }
      const free = uniqueBundleName([...objects.map((o) => o.name), ...live.map((u) => tempName(0, u.name))], name);
      return await this.startUpload(free);
    } finally {
      await lock.release();
    }
  }

  private async startUpload(name: string): Promise<BundleSink> {
    const c = await this.client();
    const key = this.key(name);
    const r = await c
      .send(new CreateMultipartUploadCommand({ Bucket: this.loc.bucket, Key: key, ContentType: 'application/x-tar' }))
      .catch((err: unknown) => {
        throw this.error(err, `start the upload of ${this.describe(name)}`);
      });
    if (!r.UploadId) throw this.error(new Error('no upload id'), `start the upload of ${this.describe(name)}`);
    return new S3Sink(this, c, key, r.UploadId, name, this.describe(name));
  }

  async open(name: string, range?: ByteRange): Promise<OpenedBundle> {
    const c = await this.client();
    const where = this.describe(name);
    const bounds: { start?: number; end?: number } | undefined = range ? byteBounds(range) : {};
    const notFound = (err: unknown) => {
      const fe = this.error(err, `read ${where}`);
      return fe instanceof NotFoundError && !noBucket(err)
        ? new NotFoundError(`no bundle at ${where}`, undefined, err)
        : fe;
    };
    if (!bounds) {
      const h = await c.send(new HeadObjectCommand({ Bucket: this.loc.bucket, Key: this.key(name) })).catch((err) => {
        throw notFound(err);
      });
      return { stream: Readable.from([]), location: where, size: h.ContentLength ?? 0 };
    }
    const from = bounds.start ?? 0;
    const Key = this.key(name);
    // The first window is asked for here, so that a missing bundle fails open() itself.
    const get = (start: number, end: number, etag?: string, abortSignal?: AbortSignal) =>
      c.send(
        new GetObjectCommand({
          Bucket: this.loc.bucket,
          Key,
          Range: `bytes=${start}-${end}`,
          ...(etag ? { IfMatch: etag } : {}),
        }),
        abortSignal ? { abortSignal } : {},
      );
    const last = bounds.end;
    let first;
    try {
      first = await get(from, Math.min(last ?? Infinity, from + FIRST_READ_WINDOW - 1));
    } catch (err) {
      // A range that starts at the end (or past it) of an object that is there: nothing to read.
      if (isStatus(err, 416)) {
        const h = await c.send(new HeadObjectCommand({ Bucket: this.loc.bucket, Key })).catch((e) => {
          throw notFound(e);
        });
        return { stream: Readable.from([]), location: where, size: h.ContentLength ?? 0 };
      }
      throw notFound(err);
    }
    const total = Number(first.ContentRange?.split('/')[1] ?? first.ContentLength);
    const size = Number.isFinite(total) ? total : undefined;
    const end = Math.min(last ?? Infinity, (size ?? Infinity) - 1); // the last byte to read
    const etag = first.ETag;
    // Destroying the stream (the reader stops, a signal aborts it) aborts the GETs still open,
    // at once: a read waiting on a GET stops waiting.
    const stop = new AbortController();
    const windows = readWindows(
      first.Body as Readable,
      from,
      end,
      async (pos, win, signal) => {
        const r = await get(pos, Math.min(end, pos + win - 1), etag, signal).catch((err: unknown) => {
          if (signal.aborted) throw signal.reason;
          if (isStatus(err, 412))
            throw new BundleError(`${where} was replaced while it was being read`, {
              hint: 'read it again',
              cause: err,
            });
          throw this.error(err, `read ${where}`);
        });
        return r.Body as Readable;
      },
      { signal: stop.signal },
    );
    const stream = new Readable({
      highWaterMark: READ_CHUNK,
      read() {
        windows.next().then(
          (r) => this.push(r.done ? null : r.value),
          (err: Error) => this.destroy(err),
        );
      },
      destroy(err, cb) {
        stop.abort(err ?? new IoError(`the read of ${where} was stopped`));
        windows.return(undefined).then(
          () => cb(err),
          () => cb(err),
        );
      },
    });
    return { stream, location: where, ...(size !== undefined ? { size } : {}) };
  }

  async list(): Promise<BundleInfo[]> {
    const objects = await this.objects();
    if (objects.length === 0 && !(await this.exists()))
      throw new NotFoundError(
        `no store at ${this.describe()}`,
        'give the bucket and prefix that backups are written to',
      );
    return objects
      .filter((o) => isBundleName(o.name))
      .map((o) => ({ name: o.name, location: this.describe(o.name), size: o.size, mtime: o.mtime }))
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  async stat(name: string): Promise<BundleInfo | undefined> {
    const c = await this.client();
    try {
      const h = await c.send(new HeadObjectCommand({ Bucket: this.loc.bucket, Key: this.key(name) }));
      return {
        name,
        location: this.describe(name),
        size: h.ContentLength ?? 0,
        mtime: h.LastModified ?? new Date(0),
      };
    } catch (err) {
      const fe = this.error(err, `look up ${this.describe(name)}`);
      if (fe instanceof NotFoundError && !noBucket(err)) return undefined;
      throw fe;
    }
  }

  async remove(name: string): Promise<void> {
    checkBundleName(name);
    // S3 deletes what is not there without a word: look first, to say so.
    if (!(await this.stat(name))) throw new NotFoundError(`no bundle at ${this.describe(name)}`);
    const c = await this.client();
    await c.send(new DeleteObjectCommand({ Bucket: this.loc.bucket, Key: this.key(name) })).catch((err: unknown) => {
      throw this.error(err, `remove ${this.describe(name)}`);
    });
  }

  /** S3 has no rename: copy (in parts beyond 5 GiB), then delete. */
  async rename(name: string, to: string): Promise<void> {
    checkBundleName(name);
    checkBundleName(to);
    const st = await this.stat(name);
    if (!st) throw new NotFoundError(`no bundle at ${this.describe(name)}`);
    const c = await this.client();
    const Bucket = this.loc.bucket;
    const source = `${Bucket}/${this.key(name)
      .split('/')
      .map((s) => encodeURIComponent(s))
      .join('/')}`;
    const what = `rename ${this.describe(name)} to ${to}`;
    try {
      if (st.size <= MAX_SINGLE_COPY) {
        await c.send(new CopyObjectCommand({ Bucket, Key: this.key(to), CopySource: source }));
      } else {
        const up = await c.send(new CreateMultipartUploadCommand({ Bucket, Key: this.key(to) }));
        try {
          const parts: CompletedPart[] = [];
          for (let off = 0, n = 1; off < st.size; off += COPY_PART, n++) {
            const end = Math.min(st.size, off + COPY_PART) - 1;
            const r = await c.send(
              new UploadPartCopyCommand({
                Bucket,
                Key: this.key(to),
                UploadId: up.UploadId,
                PartNumber: n,
                CopySource: source,
                CopySourceRange: `bytes=${off}-${end}`,
              }),
            );
            parts.push({ PartNumber: n, ETag: r.CopyPartResult?.ETag });
          }
          await c.send(
            new CompleteMultipartUploadCommand({
              Bucket,
              Key: this.key(to),
              UploadId: up.UploadId,
              MultipartUpload: { Parts: parts },
            }),
          );
        } catch (err) {
          await c
            .send(new AbortMultipartUploadCommand({ Bucket, Key: this.key(to), UploadId: up.UploadId }))
            .catch(() => {});
          throw err;
        }
      }
      await c.send(new DeleteObjectCommand({ Bucket, Key: this.key(name) }));
    } catch (err) {
      throw this.error(err, what);
    }
  }

  async close(): Promise<void> {
    const p = this.clientP;
    this.clientP = undefined;
    if (p) (await p.catch(() => undefined))?.destroy();
  }
}
