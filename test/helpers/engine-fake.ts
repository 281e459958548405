/**
 * An in-memory Docker engine for unit tests of the ops (backup, restore, migrate): an Engine
 * (src/engine/engine.ts, `implements Engine`, so the type check catches any drift between the
 * two), answering as a Docker 20.10 engine without the containerd image store, reached over TCP,
 * would, with no way onto its host. So every op takes the Engine-API data paths: volumes through
 * the archive endpoints (host-volume.ts declines: `host` is undefined), images through the
 * engine's save and load (host-image.ts declines for the same reason). Its `quirks` are those
 * quirksFor gives its facts (Docker's, by default); only Docker's behaviours are modelled.
 *
 * State: containers (inspect-shaped), images (config, RootFS diff ids and the layer tars
 * themselves), volumes (path -> file, so archive GET and PUT produce and consume real tar
 * streams), networks. Every call is recorded in order in `calls`; `timeline` also records when
 * the streams the fake hands out are first read and when they end.
 *
 * Failures: `failOn(method, when, error)` makes a call throw (the error ferry's Engine would
 * throw: a FerryError), `failStream(method, when, afterBytes)` breaks a returned stream half-way,
 * and `onCall(method, when, fn)` runs `fn` at that call (e.g. to abort the run's signal there).
 *
 * Where a behaviour of the real engine matters to an op it is modelled, with a comment saying
 * what Docker does (`DOCKER:`). Errors are those DockerEngine maps the engine's answers to
 * (mapEngineError): 404 a NotFoundError, 409 a ConflictError, anything else an EngineError.
 */
import { createHash } from 'node:crypto';
import { posix } from 'node:path';
import { Readable } from 'node:stream';
import * as tar from 'tar-stream';
import { collect, packTar, type TarEntry } from './tar.js';
import {
  HOLDER_IMAGE,
  LABEL_MANAGED,
  mapEngineError,
  type ContainerInspect,
  type ContainerSummary,
  type Engine,
  type EngineFacts,
  type ImageInspect,
  type ImageSummary,
  type NetworkInspect,
  type VolumeInspect,
} from '../../src/engine/engine.js';
import { quirksFor, type EngineQuirks } from '../../src/engine/quirks.js';
import { createRunIdentity, type RunIdentity } from '../../src/engine/run.js';
import type { HostShell } from '../../src/hostaccess/shell.js';
import type { RegistryAuth } from '../../src/engine/auth.js';
import type { ProgressMessage } from '../../src/engine/progress.js';
import { ConflictError, EngineError, FerryError, NotFoundError } from '../../src/errors.js';
import { v1LayerIds, chainIds } from '../../src/data/ship.js';

export interface FakeFile {
  type: 'file' | 'directory' | 'symlink';
  data: Buffer;
  mode: number;
  uid: number;
  gid: number;
  mtime: Date;
  linkname?: string;
}

interface RootAttrs {
  mode: number;
  uid: number;
  gid: number;
  mtime: Date;
}

export interface FakeVolume {
  name: string;
  driver: string;
  labels: Record<string, string> | null;
  options: Record<string, string> | null;
  root: RootAttrs;
  /** Relative path (no leading `./` or `/`) -> entry. */
  files: Map<string, FakeFile>;
}

interface FakeMount {
  Type: 'volume' | 'bind' | 'tmpfs';
  /** Volume name, or host path for a bind. */
  Source: string;
  Destination: string;
  RW: boolean;
}

export interface FakeContainer {
  id: string;
  name: string;
  /** Image id. */
  image: string;
  config: Record<string, unknown>;
  hostConfig: Record<string, unknown>;
  mounts: FakeMount[];
  /** network name -> endpoint settings */
  networks: Record<string, Record<string, unknown>>;
  status: 'created' | 'running' | 'paused' | 'exited';
  exitCode: number;
  /** Files written outside any mount (the writable layer), path -> entry. */
  rootfs: Map<string, FakeFile>;
  created: string;
}

export interface FakeImage {
  id: string;
  repoTags: string[];
  config: Record<string, unknown>;
  /** The config JSON as stored: its sha256 is the id. */
  configJson: Buffer;
  /** Layer tars, bottom first; the sha256 of each is its diff id. */
  layers: Buffer[];
  diffIds: string[];
  /** `repo@sha256:...` references it was pulled by. */
  digests: string[];
  /** The commit's comment and author (top-level fields of the config JSON, as Docker stores them). */
  comment?: string;
  author?: string;
}

export interface FakeNetwork {
  id: string;
  name: string;
  driver: string;
  internal: boolean;
  attachable: boolean;
  enableIPv6: boolean;
  ipam: { Driver?: string; Config?: Record<string, unknown>[]; Options?: Record<string, string> | null };
  options: Record<string, string>;
  labels: Record<string, string>;
  builtin: boolean;
}

export type FakeMethod = {
  [K in keyof Engine]-?: Engine[K] extends (...args: never[]) => unknown ? K : never;
}[keyof Engine];

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type ArgsOf<M extends FakeMethod> = Parameters<Extract<Engine[M], (...args: any[]) => unknown>>;

export interface Call {
  method: string;
  args: unknown[];
}

/** Which call a fault applies to: the nth call of the method (1-based), or the first whose arguments match. */
export type When<M extends FakeMethod> = number | ((...args: ArgsOf<M>) => boolean);

interface Rule {
  method: string;
  when?: number | ((...args: never[]) => boolean);
  times: number;
  action: (args: unknown[]) => void | Promise<void>;
  /** Where the action runs: before the call does anything, or once it has done it (the answer was lost). */
  after: boolean;
  kind: 'fail' | 'hook' | 'stream';
  afterBytes?: number;
  error?: Error;
}

export interface FakeEngineOptions {
  endpoint?: string;
  /** Shared between fakes standing for engines that can reach one registry. */
  registry?: Map<string, FakeImage>;
  facts?: Partial<EngineFacts>;
  /** The run's identity (default: a new one). Engines of one run (a migrate's two) share it. */
  run?: RunIdentity;
}

const EPOCH = new Date('2024-01-02T03:04:05Z');
const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

/** A tar of the given files (a layer, or the content of a volume), deterministic. */
export function tarOf(files: Record<string, string>): Promise<Buffer> {
  return packTar(
    Object.entries(files)
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([name, data]) => ({ name, mode: 0o644, mtime: EPOCH, uid: 0, gid: 0, data })),
  );
}

/** DOCKER (daemon merge of a create's config with its image's): the image's variables the create does not set follow its own. */
function mergeEnv(own: string[] | null | undefined, image: string[] | null | undefined): string[] | null {
  const keys = new Set((own ?? []).map((e) => e.split('=')[0]));
  const out = [...(own ?? []), ...(image ?? []).filter((e) => !keys.has(e.split('=')[0]))];
  return out.length ? out : null;
}

/** Go's filepath.Walk order (each directory's names sorted bytewise, depth first). */
function walkOrder(a: string, b: string): number {
  const x = a.split('/');
  const y = b.split('/');
  for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i]! < y[i]! ? -1 : 1;
  return x.length - y.length;
}

function splitRef(ref: string): [string, string] {
  const colon = ref.lastIndexOf(':');
  return colon > ref.lastIndexOf('/') ? [ref.slice(0, colon), ref.slice(colon + 1)] : [ref, 'latest'];
}

function normRef(ref: string): string {
  if (ref.startsWith('sha256:') || ref.includes('@')) return ref;
  const [repo, tag] = splitRef(ref);
  return `${repo}:${tag}`;
}

function clone<T>(v: T): T {
  return v === undefined ? v : (JSON.parse(JSON.stringify(v)) as T);
}

export class FakeEngine implements Engine {
  readonly facts: EngineFacts;
  /** quirksFor(facts): Docker's (no Podman), unless a test's facts say otherwise. */
  readonly quirks: EngineQuirks;
  readonly run: RunIdentity;
  /** A TCP engine: no commands on its host, so ferry never reads a volume or layer from its disk. */
  readonly host: HostShell | undefined = undefined;

  readonly containers = new Map<string, FakeContainer>();
  readonly images = new Map<string, FakeImage>();
  /** When an image was made, where a test set it (listImages' Created); else EPOCH. */
  readonly imageCreated = new Map<string, Date>();
  readonly volumes = new Map<string, FakeVolume>();
  readonly networks = new Map<string, FakeNetwork>();
  /** Host paths that exist on the engine's host (for bind mounts). */
  readonly hostPaths = new Set<string>(['/', '/srv', '/tmp']);
  readonly registry: Map<string, FakeImage>;

  /** Every call to the surface, in order (including those that failed). */
  readonly calls: Call[] = [];
  /** `call:<method>` for every call, `read:<method>` / `end:<method>` when a stream it returned is first read / ends. */
  readonly timeline: string[] = [];
  /** The file names of each archive `loadImage` received, in order. */
  readonly loaded: string[][] = [];
  /** What `exec` answers (default: exit 0, no output). */
  execHandler: (id: string, cmd: string[]) => { exitCode: number; output: string } = () => ({
    exitCode: 0,
    output: '',
  });

  private rules: Rule[] = [];
  private counts = new Map<string, number>();
  private seq = 0;

  constructor(opts: FakeEngineOptions = {}) {
    this.facts = {
      endpoint: opts.endpoint ?? 'tcp://fake-engine:2375',
      serverVersion: '20.10.24',
      apiVersion: '1.41',
      os: 'linux',
      arch: 'amd64',
      podman: false,
      containerdStore: false,
      loggingDriver: 'json-file',
      remapped: false,
      storageDriver: 'overlay2',
      rootDir: '/var/lib/docker',
      ...opts.facts,
    };
    this.quirks = quirksFor(this.facts);
    this.run = opts.run ?? createRunIdentity();
    this.registry = opts.registry ?? new Map();
    for (const [name, driver] of [
      ['bridge', 'bridge'],
      ['host', 'host'],
      ['none', 'null'],
    ] as const)
      this.networks.set(name, {
        id: this.newId(`net-${name}`),
        name,
        driver,
        internal: false,
        attachable: false,
        enableIPv6: false,
        ipam: { Driver: 'default', Config: name === 'bridge' ? [{ Subnet: '172.17.0.0/16' }] : [] },
        options: {},
        labels: {},
        builtin: true,
      });
  }

  // ---- test set-up ----------------------------------------------------------------------

  private newId(seed: string): string {
    return sha(`${this.facts.endpoint}/${seed}/${++this.seq}`);
  }

  /** Add an image made of layers (each a map of path -> content); returns its id. */
  async addImage(ref: string, layers: Record<string, string>[], config: Record<string, unknown> = {}): Promise<string> {
    const tars = await Promise.all(layers.map(tarOf));
    return this.registerImage([normRef(ref)], tars, { Cmd: ['/app'], ...config });
  }

  private registerImage(
    tags: string[],
    layers: Buffer[],
    cfg: Record<string, unknown>,
    top: { comment?: string; author?: string } = {},
  ): string {
    const diffIds = layers.map((l) => `sha256:${sha(l)}`);
    const config = {
      ...top,
      architecture: this.facts.arch,
      os: this.facts.os,
      config: cfg,
      rootfs: { type: 'layers', diff_ids: diffIds },
    };
    const configJson = Buffer.from(JSON.stringify(config));
    return this.storeImage(configJson, layers, tags);
  }

  private storeImage(configJson: Buffer, layers: Buffer[], tags: string[]): string {
    const id = `sha256:${sha(configJson)}`;
    const parsed = JSON.parse(configJson.toString('utf8')) as {
      config?: Record<string, unknown>;
      rootfs?: { diff_ids?: string[] };
      comment?: string;
      author?: string;
    };
    const existing = this.images.get(id);
    const img: FakeImage = existing ?? {
      id,
      repoTags: [],
      config: parsed.config ?? {},
      configJson,
      layers,
      diffIds: parsed.rootfs?.diff_ids ?? [],
      digests: [],
      ...(typeof parsed.comment === 'string' ? { comment: parsed.comment } : {}),
      ...(typeof parsed.author === 'string' ? { author: parsed.author } : {}),
    };
    this.images.set(id, img);
    for (const t of tags) this.tag(img, t);
    return id;
  }

  /** DOCKER: a tag names one image; tagging another moves it. */
  private tag(img: FakeImage, ref: string) {
    const r = normRef(ref);
    for (const other of this.images.values()) other.repoTags = other.repoTags.filter((t) => t !== r);
    img.repoTags.push(r);
  }

  /** Add a volume holding `files` (path -> content). */
  addVolume(name: string, files: Record<string, string> = {}, opts: { labels?: Record<string, string> } = {}) {
    const v = this.makeVolume(name, 'local', opts.labels ?? null, null);
    for (const [p, text] of Object.entries(files)) this.writeFile(v, p, Buffer.from(text));
    return v;
  }

  private makeVolume(
    name: string,
    driver: string,
    labels: Record<string, string> | null,
    options: Record<string, string> | null,
  ): FakeVolume {
    const v: FakeVolume = {
      name,
      driver,
      labels,
      options,
      root: { mode: 0o755, uid: 0, gid: 0, mtime: EPOCH },
      files: new Map(),
    };
    this.volumes.set(name, v);
    return v;
  }

  private writeFile(v: FakeVolume, path: string, data: Buffer, meta: Partial<FakeFile> = {}) {
    const rel = path.replace(/^\.?\/+/, '').replace(/\/+$/, '');
    const parts = rel.split('/');
    for (let i = 1; i < parts.length; i++) {
      const dir = parts.slice(0, i).join('/');
      if (!v.files.has(dir))
        v.files.set(dir, { type: 'directory', data: Buffer.alloc(0), mode: 0o755, uid: 0, gid: 0, mtime: EPOCH });
    }
    v.files.set(rel, { type: 'file', data, mode: 0o644, uid: 0, gid: 0, mtime: EPOCH, ...meta });
  }

  /** Add a user-defined network. */
  addNetwork(name: string, subnet?: string) {
    const n: FakeNetwork = {
      id: this.newId(`net-${name}`),
      name,
      driver: 'bridge',
      internal: false,
      attachable: false,
      enableIPv6: false,
      ipam: { Driver: 'default', Config: subnet ? [{ Subnet: subnet }] : [], Options: {} },
      options: {},
      labels: {},
      builtin: false,
    };
    this.networks.set(name, n);
    return n;
  }

  /**
   * Add a container as `docker run` would leave it: `volumes` maps a volume name to where it is
   * mounted (the volume is made when missing), `networks` the networks it is on (the first its
   * network mode). `status`: running (default), paused or exited.
   */
  addContainer(
    name: string,
    opts: {
      image: string;
      volumes?: Record<string, string>;
      networks?: string[];
      status?: FakeContainer['status'];
      labels?: Record<string, string>;
      env?: string[];
    },
  ): FakeContainer {
    const img = this.findImage(opts.image);
    if (!img) throw new Error(`fake: no image ${opts.image}`);
    const mounts: FakeMount[] = [];
    const hcMounts: Record<string, unknown>[] = [];
    for (const [vol, dest] of Object.entries(opts.volumes ?? {})) {
      if (!this.volumes.has(vol)) this.addVolume(vol);
      mounts.push({ Type: 'volume', Source: vol, Destination: dest, RW: true });
      hcMounts.push({ Type: 'volume', Source: vol, Target: dest });
    }
    const nets = opts.networks ?? ['bridge'];
    const id = this.newId(`container-${name}`);
    const c: FakeContainer = {
      id,
      name,
      image: img.id,
      config: {
        Hostname: id.slice(0, 12),
        Image: opts.image,
        Env: mergeEnv(opts.env, img.config.Env as string[] | undefined),
        Cmd: img.config.Cmd ?? null,
        Entrypoint: img.config.Entrypoint ?? null,
        Labels: { ...((img.config.Labels as Record<string, string> | undefined) ?? {}), ...opts.labels },
        Volumes: null,
        WorkingDir: '',
        User: '',
      },
      hostConfig: {
        NetworkMode: nets[0],
        Mounts: hcMounts.length ? hcMounts : null,
        Binds: null,
        RestartPolicy: { Name: 'no', MaximumRetryCount: 0 },
        LogConfig: { Type: 'json-file', Config: {} },
        ShmSize: 64 * 1024 * 1024,
        IpcMode: 'private',
        CgroupnsMode: 'host',
      },
      mounts,
      networks: Object.fromEntries(nets.map((n) => [n, this.endpoint(n, id, {})])),
      status: opts.status ?? 'running',
      exitCode: 0,
      rootfs: new Map(),
      created: EPOCH.toISOString(),
    };
    this.containers.set(id, c);
    return c;
  }

  private endpoint(network: string, id: string, cfg: Record<string, unknown>): Record<string, unknown> {
    const n = this.networks.get(network);
    return {
      IPAMConfig: (cfg.IPAMConfig as unknown) ?? null,
      Links: (cfg.Links as unknown) ?? null,
      Aliases: n && !n.builtin ? [...((cfg.Aliases as string[] | undefined) ?? []), id.slice(0, 12)] : null,
      NetworkID: n?.id ?? '',
      DriverOpts: (cfg.DriverOpts as unknown) ?? null,
    };
  }

  // ---- failure injection ----------------------------------------------------------------

  /**
   * Make a call of `method` throw `error` (default: an EngineError naming the call). `when`: the
   * nth call (1-based) or the first whose arguments match (default: the next call). `after`: the
   * engine does what was asked and only then the call fails (the answer was lost).
   */
  failOn<M extends FakeMethod>(
    method: M,
    when?: When<M>,
    error?: Error,
    opts: { after?: boolean; times?: number } = {},
  ): this {
    this.rules.push({
      method,
      when: when as Rule['when'],
      times: opts.times ?? 1,
      after: !!opts.after,
      kind: 'fail',
      error,
      action: (args) => {
        throw error ?? new EngineError(`${method} ${String(args[0] ?? '')}: injected failure`.trim());
      },
    });
    return this;
  }

  /** Run `fn` at a call of `method` (before the engine does it), e.g. to abort the run there. */
  onCall<M extends FakeMethod>(method: M, when: When<M> | undefined, fn: (args: unknown[]) => void): this {
    this.rules.push({ method, when: when as Rule['when'], times: 1, after: false, kind: 'hook', action: fn });
    return this;
  }

  /**
   * Break the stream a call of `method` (getArchive, saveImages) returns: it gives
   * `afterBytes` bytes, then fails with `error` (default: a connection reset).
   */
  failStream<M extends 'getArchive' | 'saveImages'>(
    method: M,
    when: When<M> | undefined,
    afterBytes: number,
    error?: Error,
  ): this {
    this.rules.push({
      method,
      when: when as Rule['when'],
      times: 1,
      after: true,
      kind: 'stream',
      afterBytes,
      error,
      action: () => {},
    });
    return this;
  }

  private matching(method: string, args: unknown[], n: number): Rule[] {
    const out: Rule[] = [];
    for (const r of this.rules) {
      if (r.method !== method || r.times <= 0) continue;
      const hit =
        r.when === undefined ||
        (typeof r.when === 'number' ? r.when === n : (r.when as (...a: unknown[]) => boolean)(...args));
      if (!hit) continue;
      r.times--;
      out.push(r);
    }
    return out;
  }

  /** Record a call, apply the rules for it, and run `fn`. */
  private async call<T>(method: string, args: unknown[], fn: () => T | Promise<T>): Promise<T> {
    return (await this.callRules(method, args, fn)).out;
  }

  /** call(), for a call that answers with a response body (`fn` gives its bytes). */
  private async callBody(method: string, args: unknown[], fn: () => Promise<Buffer>): Promise<Readable> {
    const { out, rules } = await this.callRules(method, args, fn);
    return this.body(
      method,
      out,
      rules.find((r) => r.kind === 'stream'),
    );
  }

  private async callRules<T>(method: string, args: unknown[], fn: () => T | Promise<T>) {
    this.calls.push({ method, args });
    this.timeline.push(`call:${method}`);
    const n = (this.counts.get(method) ?? 0) + 1;
    this.counts.set(method, n);
    const rules = this.matching(method, args, n);
    for (const r of rules) if (!r.after && r.kind !== 'stream') await r.action(args);
    // Let other work interleave as it would with a real engine's answer.
    await Promise.resolve();
    const out = await fn();
    for (const r of rules) if (r.after && r.kind === 'fail') await r.action(args);
    return { out, rules };
  }

  /**
   * A response body as dockerode hands it out (an http.IncomingMessage): produced only as the
   * consumer reads it (`read:` in the timeline at its first read, `end:` at its end), and
   * destroyed with an error, it emits that error only to listeners it has (Node's
   * IncomingMessage does the same: an abort before anyone listens is not an uncaught error).
   * `broken`: it fails after that many bytes.
   */
  private body(method: string, data: Buffer, broken?: Rule): Readable {
    const timeline = this.timeline;
    let at = 0;
    const limit = broken ? Math.min(broken.afterBytes ?? 0, data.length) : data.length;
    const err = broken?.error ?? Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' });
    return new (class extends Readable {
      override _read(size: number) {
        if (at === 0) timeline.push(`read:${method}`);
        if (at >= limit) {
          if (broken) this.destroy(err);
          else {
            timeline.push(`end:${method}`);
            this.push(null);
          }
          return;
        }
        const n = Math.min(size, 16_384, limit - at);
        const chunk = data.subarray(at, at + n);
        at += n;
        this.push(chunk);
      }
      override _destroy(e: Error | null, cb: (e?: Error | null) => void) {
        cb(e && this.listenerCount('error') > 0 ? e : null);
      }
    })();
  }

  // ---- what tests look at ---------------------------------------------------------------

  /** The methods called, in order (optionally only those in `only`). */
  methods(only?: string[]): string[] {
    return this.calls.map((c) => c.method).filter((m) => !only || only.includes(m));
  }

  callsTo(method: string): unknown[][] {
    return this.calls.filter((c) => c.method === method).map((c) => c.args);
  }

  containerByName(name: string): FakeContainer | undefined {
    return [...this.containers.values()].find((c) => c.name === name);
  }

  /** A volume's files as path -> content (directories left out). */
  volumeFiles(name: string): Record<string, string> | undefined {
    const v = this.volumes.get(name);
    if (!v) return undefined;
    return Object.fromEntries(
      [...v.files.entries()]
        .filter(([, f]) => f.type === 'file')
        .map(([p, f]) => [p, f.data.toString('utf8')] as const)
        .sort(([a], [b]) => a.localeCompare(b)),
    );
  }

  /** Everything on the engine, as plain data, to compare a before with an after. */
  state() {
    return {
      containers: [...this.containers.values()]
        .map((c) => ({
          name: c.name,
          id: c.id,
          image: c.image,
          status: c.status,
          mounts: c.mounts.map((m) => `${m.Source}:${m.Destination}`),
        }))
        .sort((a, b) => a.name.localeCompare(b.name)),
      volumes: Object.fromEntries(
        [...this.volumes.keys()]
          .sort()
          .map((n) => [n, { files: this.volumeFiles(n), root: this.volumes.get(n)!.root }]),
      ),
      networks: [...this.networks.keys()].sort(),
      images: [...this.images.values()]
        .map((i) => ({ id: i.id, tags: [...i.repoTags].sort() }))
        .sort((a, b) => a.id.localeCompare(b.id)),
    };
  }

  // ---- lookups --------------------------------------------------------------------------

  private findContainer(ref: string): FakeContainer | undefined {
    const byName = this.containerByName(ref.replace(/^\//, ''));
    if (byName) return byName;
    const full = this.containers.get(ref);
    if (full) return full;
    // DOCKER: an unambiguous id prefix names a container.
    const pre = [...this.containers.values()].filter((c) => c.id.startsWith(ref));
    return pre.length === 1 ? pre[0] : undefined;
  }

  private mustContainer(ref: string, what: string): FakeContainer {
    const c = this.findContainer(ref);
    if (!c) throw new NotFoundError(`${what}: No such container: ${ref}`);
    return c;
  }

  private findImage(ref: string): FakeImage | undefined {
    if (ref.startsWith('sha256:')) return this.images.get(ref);
    const at = ref.indexOf('@');
    if (at >= 0) return [...this.images.values()].find((i) => i.digests.includes(ref));
    const r = normRef(ref);
    const tagged = [...this.images.values()].find((i) => i.repoTags.includes(r));
    if (tagged) return tagged;
    if (/^[0-9a-f]{12,64}$/.test(ref)) return [...this.images.values()].find((i) => i.id.slice(7).startsWith(ref));
    return undefined;
  }

  /** Containers that mount a volume (holders included): the engine will not remove it. */
  private volumeUsers(name: string): FakeContainer[] {
    return [...this.containers.values()].filter((c) => c.mounts.some((m) => m.Type === 'volume' && m.Source === name));
  }

  // ---- Engine: connection ---------------------------------------------------------------

  differences(): string[] {
    this.calls.push({ method: 'differences', args: [] });
    return [];
  }

  close(): void {
    this.calls.push({ method: 'close', args: [] });
  }

  readonly prepareCleanup: () => void = () => {
    this.calls.push({ method: 'prepareCleanup', args: [] });
  };

  apiAtLeast(v: string): boolean {
    const [a1, a2] = this.facts.apiVersion.split('.').map(Number) as [number, number];
    const [b1, b2] = v.split('.').map(Number) as [number, number];
    return a1 - b1 > 0 || (a1 === b1 && a2 >= b2);
  }

  mapError(err: unknown, what: string, map?: { notFound?: string; conflict?: string }): FerryError {
    return mapEngineError(err, what, this.facts.endpoint, map);
  }

  capabilities() {
    // DOCKER 20.10 GET /info
    return this.call('capabilities', [], () => ({
      runtimes: ['io.containerd.runc.v2', 'io.containerd.runtime.v1.linux', 'runc'],
      logDrivers: [
        'awslogs',
        'fluentd',
        'gcplogs',
        'gelf',
        'journald',
        'json-file',
        'local',
        'logentries',
        'splunk',
        'syslog',
      ],
      volumeDrivers: ['local'],
      networkDrivers: ['bridge', 'host', 'ipvlan', 'macvlan', 'null', 'overlay'],
    }));
  }

  // ---- Engine: containers ---------------------------------------------------------------

  private inspectOf(c: FakeContainer): ContainerInspect {
    const vols = c.mounts.map((m) => ({
      Type: m.Type,
      ...(m.Type === 'volume' ? { Name: m.Source, Driver: 'local' } : {}),
      Source: m.Type === 'volume' ? `/var/lib/docker/volumes/${m.Source}/_data` : m.Source,
      Destination: m.Destination,
      Mode: m.Type === 'volume' ? 'z' : '',
      RW: m.RW,
      Propagation: m.Type === 'bind' ? 'rprivate' : '',
    }));
    const out = {
      Id: c.id,
      Created: c.created,
      Path: '/app',
      Args: [],
      State: {
        Status: c.status,
        Running: c.status === 'running' || c.status === 'paused',
        Paused: c.status === 'paused',
        Restarting: false,
        OOMKilled: false,
        Dead: false,
        Pid: c.status === 'running' || c.status === 'paused' ? 4242 : 0,
        ExitCode: c.exitCode,
        Error: '',
        StartedAt: EPOCH.toISOString(),
        FinishedAt: '0001-01-01T00:00:00Z',
      },
      Image: c.image,
      Name: `/${c.name}`,
      RestartCount: 0,
      Driver: 'overlay2',
      Platform: 'linux',
      MountLabel: '',
      ProcessLabel: '',
      AppArmorProfile: '',
      HostConfig: clone(c.hostConfig),
      Mounts: vols,
      Config: clone(c.config),
      NetworkSettings: { Networks: clone(c.networks), Ports: {} },
    };
    return out as unknown as ContainerInspect;
  }

  inspectContainer(nameOrId: string): Promise<ContainerInspect> {
    return this.call('inspectContainer', [nameOrId], () => {
      const c = this.findContainer(nameOrId);
      if (!c) throw new NotFoundError(`no such container: ${nameOrId}`);
      return this.inspectOf(c);
    });
  }

  containerExists(name: string): Promise<boolean> {
    return this.call('containerExists', [name], () => !!this.findContainer(name));
  }

  /**
   * DOCKER GET /containers/json (`all`: stopped ones too), filtered by labels (`key` or
   * `key=value`, all must match); each row has the fields ferry reads (ContainerSummary).
   */
  private containerList(all: boolean, labels: string[]): ContainerSummary[] {
    return [...this.containers.values()]
      .filter((c) => all || c.status === 'running' || c.status === 'paused')
      .filter((c) =>
        labels.every((l) => {
          const eq = l.indexOf('=');
          const have = (c.config.Labels as Record<string, string> | null)?.[eq < 0 ? l : l.slice(0, eq)];
          return eq < 0 ? have !== undefined : have === l.slice(eq + 1);
        }),
      )
      .map((c) => ({
        Id: c.id,
        Names: [`/${c.name}`],
        Labels: { ...((c.config.Labels as Record<string, string> | null) ?? {}) },
        Ports: [],
        HostConfig: { NetworkMode: String(c.hostConfig.NetworkMode ?? 'default') },
        ImageID: c.image,
        Image: String(c.config.Image ?? c.image),
        Created: Math.floor(Date.parse(c.created) / 1000),
        Mounts: c.mounts.map((m) => ({
          Type: m.Type,
          ...(m.Type === 'volume' ? { Name: m.Source } : {}),
          Source: m.Type === 'volume' ? `/var/lib/docker/volumes/${m.Source}/_data` : m.Source,
          Destination: m.Destination,
        })),
      }));
  }

  listContainers(all = false): Promise<ContainerSummary[]> {
    return this.call('listContainers', [all], () => this.containerList(all, []));
  }

  listLabelledContainers(labels: string[]): Promise<ContainerSummary[]> {
    return this.call('listLabelledContainers', [labels], () => this.containerList(true, labels));
  }

  pause(id: string) {
    return this.call('pause', [id], () => {
      const c = this.mustContainer(id, `pause container ${id}`);
      // DOCKER: only a running container can be paused (409 otherwise).
      if (c.status === 'paused') throw new ConflictError(`pause container ${id}: Container ${c.id} is already paused`);
      if (c.status !== 'running') throw new ConflictError(`pause container ${id}: Container ${c.id} is not running`);
      c.status = 'paused';
    });
  }

  unpause(id: string) {
    return this.call('unpause', [id], () => {
      const c = this.mustContainer(id, `resume container ${id}`);
      // DOCKER: 409 for a container that is not paused.
      if (c.status !== 'paused') throw new ConflictError(`resume container ${id}: Container ${c.id} is not paused`);
      c.status = 'running';
    });
  }

  renameContainer(id: string, name: string) {
    return this.call('renameContainer', [id, name], () => {
      const c = this.mustContainer(id, `rename container ${id} to ${name}`);
      // DOCKER: 409 when another container has the name; the id, settings and mounts stay.
      const other = this.findContainer(name);
      if (other && other !== c) throw new ConflictError(`rename container ${id}: the name ${name} is already in use`);
      c.name = name;
    });
  }

  stop(id: string, timeoutSeconds?: number) {
    return this.call('stop', [id, timeoutSeconds], () => {
      const c = this.mustContainer(id, `stop container ${id}`);
      // DOCKER: 304 for a stopped one, which DockerEngine.stop ignores; a paused one is killed (137).
      if (c.status === 'running') c.exitCode = 0;
      else if (c.status === 'paused') c.exitCode = 137;
      else return;
      c.status = 'exited';
    });
  }

  start(id: string) {
    return this.call('start', [id], () => {
      const c = this.mustContainer(id, `start container ${id}`);
      // DOCKER: 304 for a running one (ignored by DockerEngine.start); a paused one must be unpaused.
      if (c.status === 'running') return;
      if (c.status === 'paused')
        throw new ConflictError(`start container ${id}: cannot start a paused container, try unpause instead`);
      // DOCKER: joining another container's network needs it running (409).
      const mode = String(c.hostConfig.NetworkMode ?? '');
      if (mode.startsWith('container:')) {
        const other = this.findContainer(mode.slice('container:'.length));
        if (!other || other.status !== 'running')
          throw new ConflictError(`start container ${id}: cannot join network of a non running container: ${mode}`);
      }
      // DOCKER: the endpoints are made at start: every network must still be there.
      for (const n of Object.keys(c.networks))
        if (!this.networks.has(n)) throw new NotFoundError(`start container ${id}: network ${n} not found`);
      // A never-started holder has nothing to run.
      const ep = c.config.Entrypoint as string[] | null;
      if (ep?.[0] === '/nonexistent-ferry-holder')
        throw new EngineError(
          `start container ${id}: the engine answered 400: failed to create shim task: exec: "/nonexistent-ferry-holder": stat /nonexistent-ferry-holder: no such file or directory`,
        );
      c.status = 'running';
      c.exitCode = 0;
    });
  }

  restart(id: string) {
    return this.call('restart', [id], () => {
      const c = this.mustContainer(id, `restart container ${id}`);
      c.status = 'running';
    });
  }

  createContainer(name: string | undefined, body: Record<string, unknown>): Promise<string> {
    return this.call('createContainer', [name, body], () => this.create(name, body));
  }

  private create(name: string | undefined, body: Record<string, unknown>): string {
    const n = name ?? `fake_${this.seq + 1}`;
    // DOCKER: the name is checked first (409), then the image (404).
    if (this.containerByName(n)) throw new ConflictError(`a container named ${n} already exists`);
    const img = this.findImage(String(body.Image));
    if (!img) throw new NotFoundError(`create container ${n}: image ${String(body.Image)} is not on the engine`);
    const hc = clone((body.HostConfig ?? {}) as Record<string, unknown>);
    const mounts: FakeMount[] = [];
    for (const m of (hc.Mounts as Record<string, unknown>[] | null | undefined) ?? []) {
      const type = String(m.Type) as FakeMount['Type'];
      const source = String(m.Source ?? '');
      // DOCKER: a `--mount type=bind` source must exist at create.
      if (type === 'bind' && !this.hostPaths.has(source))
        throw new EngineError(
          `create container ${n}: the engine answered 400: invalid mount config for type "bind": bind source path does not exist: ${source}`,
        );
      mounts.push({ Type: type, Source: source, Destination: String(m.Target), RW: m.ReadOnly !== true });
    }
    for (const b of (hc.Binds as string[] | null | undefined) ?? []) {
      const [src, dest, opt] = b.split(':') as [string, string, string | undefined];
      const isPath = src.startsWith('/');
      if (isPath) this.hostPaths.add(src); // DOCKER: a -v bind creates a missing host path
      mounts.push({ Type: isPath ? 'bind' : 'volume', Source: src, Destination: dest, RW: !/\bro\b/.test(opt ?? '') });
    }
    // DOCKER: the image's VOLUME lines not covered by a mount get an anonymous volume each.
    const declared = {
      ...((img.config.Volumes as Record<string, unknown> | null | undefined) ?? {}),
      ...((body.Volumes as Record<string, unknown> | null | undefined) ?? {}),
    };
    for (const dest of Object.keys(declared))
      if (!mounts.some((m) => m.Destination === dest))
        mounts.push({ Type: 'volume', Source: sha(`anon/${n}/${dest}/${++this.seq}`), Destination: dest, RW: true });
    const mode = String(hc.NetworkMode ?? 'default');
    // DOCKER: a namespace shared with another container (`container:<name>`) needs that container (404).
    for (const k of ['NetworkMode', 'IpcMode', 'PidMode']) {
      const v = hc[k];
      if (typeof v === 'string' && v.startsWith('container:') && !this.findContainer(v.slice('container:'.length)))
        throw new NotFoundError(`create container ${n}: No such container: ${v.slice('container:'.length)}`);
    }
    const eps = ((body.NetworkingConfig as { EndpointsConfig?: Record<string, Record<string, unknown>> } | undefined)
      ?.EndpointsConfig ?? {}) as Record<string, Record<string, unknown>>;
    const nets = Object.keys(eps).length
      ? Object.keys(eps)
      : mode === 'default' || mode === 'bridge'
        ? ['bridge']
        : mode.startsWith('container:')
          ? []
          : [mode];
    // DOCKER: a network named at create must exist (404).
    for (const net of nets)
      if (!this.networks.has(net)) throw new NotFoundError(`create container ${n}: network ${net} not found`);
    // The volumes named by the mounts are made now (DOCKER: at create, not at start).
    for (const m of mounts)
      if (m.Type === 'volume' && !this.volumes.has(m.Source)) this.makeVolume(m.Source, 'local', null, null);
    const id = this.newId(`container-${n}`);
    const { HostConfig: _hc, NetworkingConfig: _nc, ...cfg } = body;
    const imgCfg = img.config;
    const c: FakeContainer = {
      id,
      name: n,
      image: img.id,
      config: {
        Hostname: id.slice(0, 12),
        WorkingDir: '',
        User: '',
        ...cfg,
        Env: mergeEnv(cfg.Env as string[] | undefined, imgCfg.Env as string[] | undefined),
        Cmd: cfg.Cmd !== undefined ? cfg.Cmd : cfg.Entrypoint !== undefined ? null : (imgCfg.Cmd ?? null),
        Entrypoint: cfg.Entrypoint ?? imgCfg.Entrypoint ?? null,
        Labels: { ...((imgCfg.Labels as Record<string, string> | undefined) ?? {}), ...(cfg.Labels as object) },
        Volumes: Object.keys(declared).length ? declared : null,
        Image: String(body.Image),
      },
      hostConfig: hc,
      mounts,
      networks: Object.fromEntries(nets.map((net) => [net, this.endpoint(net, id, eps[net] ?? {})])),
      status: 'created',
      exitCode: 0,
      rootfs: new Map(),
      created: new Date().toISOString(),
    };
    this.containers.set(id, c);
    return id;
  }

  removeContainer(id: string, opts: { force?: boolean; volumes?: boolean } = {}) {
    return this.call('removeContainer', [id, opts], () => {
      const c = this.findContainer(id);
      if (!c) return; // DOCKER: 404, which DockerEngine.removeContainer ignores
      const force = opts.force ?? true;
      // DOCKER: a running (or paused) container goes only with force (409).
      if (!force && (c.status === 'running' || c.status === 'paused'))
        throw new ConflictError(`remove container ${id}: You cannot remove a running container ${c.id}`);
      this.containers.delete(c.id);
      if (opts.volumes)
        for (const m of c.mounts)
          if (m.Type === 'volume' && /^[0-9a-f]{64}$/.test(m.Source) && !this.volumeUsers(m.Source).length)
            this.volumes.delete(m.Source);
    });
  }

  commit(
    id: string,
    repo: string,
    tag: string,
    opts: { pause: boolean; comment?: string; author?: string; labels?: Record<string, string> },
  ): Promise<string> {
    return this.call('commit', [id, repo, tag, opts], async () => {
      const c = this.mustContainer(id, `commit container ${id}`);
      // DOCKER: a paused, stopped or running container can all be committed; with pause=true
      // a running one is paused for the commit and resumed (a paused one is left paused).
      const base = this.images.get(c.image)!;
      const layer = await tarOf(
        Object.fromEntries([...c.rootfs.entries()].map(([p, f]) => [p, f.data.toString('utf8')])),
      );
      const cfg: Record<string, unknown> = {
        ...clone(c.config),
        ...(opts.labels ? { Labels: { ...(c.config.Labels as object), ...opts.labels } } : {}),
      };
      delete cfg.Hostname;
      // DOCKER: the comment and author are top-level fields of the image config (kept by save
      // and load), reported by image inspect as Comment and Author.
      return this.registerImage(
        [`${repo}:${tag}`],
        [...base.layers, layer],
        { ...cfg, created: `${++this.seq}` },
        {
          ...(opts.comment !== undefined ? { comment: opts.comment } : {}),
          ...(opts.author !== undefined ? { author: opts.author } : {}),
        },
      );
    });
  }

  exec(
    id: string,
    cmd: string[],
    opts: { user?: string; keep?: number; signal?: AbortSignal } = {},
  ): Promise<{ exitCode: number; output: string }> {
    return this.call('exec', [id, cmd, opts], () => {
      const c = this.mustContainer(id, `run in container ${id}`);
      // DOCKER: exec needs a running, unpaused container (409).
      if (c.status !== 'running') throw new ConflictError(`run in container ${id}: Container ${c.id} is not running`);
      return this.execHandler(c.id, cmd);
    });
  }

  attachOutput(id: string): Promise<Readable> {
    return this.call('attachOutput', [id], () => {
      this.mustContainer(id, `attach to container ${id}`);
      return Readable.from([]);
    });
  }

  waitExit(id: string): Promise<number> {
    return this.call('waitExit', [id], () => this.mustContainer(id, `wait for container ${id}`).exitCode);
  }

  containerLogs(id: string, tail?: number): Promise<string> {
    return this.call('containerLogs', [id, tail], () => {
      this.mustContainer(id, `read the logs of container ${id}`);
      return '';
    });
  }

  listLabelled(label: string): Promise<{ containers: string[]; volumes: string[]; networks: string[] }> {
    return this.call('listLabelled', [label], () => {
      const [k, v] = label.split('=') as [string, string | undefined];
      const has = (l: Record<string, string> | null | undefined) =>
        !!l && (v === undefined ? l[k] !== undefined : l[k] === v);
      return {
        containers: [...this.containers.values()]
          .filter((c) => has(c.config.Labels as Record<string, string>))
          .map((c) => c.id),
        volumes: [...this.volumes.values()].filter((x) => has(x.labels)).map((x) => x.name),
        networks: [...this.networks.values()].filter((x) => has(x.labels)).map((x) => x.name),
      };
    });
  }

  // ---- Engine: images -------------------------------------------------------------------

  private imageInspectOf(i: FakeImage): ImageInspect {
    return {
      Id: i.id,
      RepoTags: [...i.repoTags],
      RepoDigests: [],
      Parent: '',
      Comment: i.comment ?? '',
      Created: EPOCH.toISOString(),
      Container: '',
      ContainerConfig: {},
      DockerVersion: this.facts.serverVersion,
      Author: i.author ?? '',
      Config: clone(i.config),
      Architecture: this.facts.arch,
      Os: this.facts.os,
      Size: i.layers.reduce((a, l) => a + l.length, 0),
      VirtualSize: i.layers.reduce((a, l) => a + l.length, 0),
      GraphDriver: { Name: 'overlay2', Data: {} },
      RootFS: { Type: 'layers', Layers: [...i.diffIds] },
    } as unknown as ImageInspect;
  }

  inspectImage(ref: string): Promise<ImageInspect> {
    return this.call('inspectImage', [ref], () => {
      const i = this.findImage(ref);
      if (!i) throw new NotFoundError(`no such image: ${ref}`);
      return this.imageInspectOf(i);
    });
  }

  /** DOCKER GET /images/json: every tagged or untagged top-level image. */
  listImages(): Promise<ImageSummary[]> {
    return this.call('listImages', [], () =>
      [...this.images.values()].map((i) => ({
        Id: i.id,
        RepoTags: i.repoTags.length ? [...i.repoTags] : ['<none>:<none>'],
        Created: Math.floor((this.imageCreated.get(i.id) ?? EPOCH).getTime() / 1000),
      })),
    );
  }

  imageExists(ref: string): Promise<boolean> {
    return this.call('imageExists', [ref], () => !!this.findImage(ref));
  }

  /**
   * DOCKER 20.10 `docker save`: manifest.json, the config as `<id hex>.json`, each layer as
   * `<v1 id>/layer.tar` (with `json` and `VERSION` beside it), and `repositories`. The v1 ids
   * come from ferry's own derivation (src/data/ship.ts): layer skipping against the fake checks
   * that the pieces fit, not that the derivation matches Docker's (the e2e tests do that).
   */
  saveImages(refs: string[]): Promise<Readable> {
    return this.callBody('saveImages', [refs], () => {
      const imgs = refs.map((r) => {
        const i = this.findImage(r);
        if (!i) throw new NotFoundError(`save image ${refs.join(', ')}: reference does not exist: ${r}`);
        return { ref: normRef(r), img: i };
      });
      const entries: TarEntry[] = [];
      const manifest: { Config: string; RepoTags: string[] | null; Layers: string[] }[] = [];
      for (const { ref, img } of imgs) {
        const ids = [...v1LayerIds(img.diffIds), sha(`top/${img.id}`)];
        const layers = img.layers.map((l, k) => {
          const dir = ids[k]!;
          entries.push(
            { name: `${dir}/`, type: 'directory', mtime: EPOCH },
            { name: `${dir}/VERSION`, mtime: EPOCH, data: '1.0' },
            { name: `${dir}/json`, mtime: EPOCH, data: JSON.stringify({ id: dir }) },
            { name: `${dir}/layer.tar`, mtime: EPOCH, data: l },
          );
          return `${dir}/layer.tar`;
        });
        const cfgName = `${img.id.slice(7)}.json`;
        entries.push({ name: cfgName, mtime: EPOCH, data: img.configJson });
        manifest.push({ Config: cfgName, RepoTags: ref.startsWith('sha256:') ? null : [ref], Layers: layers });
      }
      entries.push({ name: 'manifest.json', mtime: EPOCH, data: JSON.stringify(manifest) });
      return packTar(entries);
    });
  }

  /**
   * DOCKER `docker load`: reads the archive; a layer the engine has (by chain id) is not
   * opened, one it lacks must be in the archive and hash to its diff id, else the load fails.
   */
  loadImage(src: Readable, onMessage?: (m: ProgressMessage) => void): Promise<string[]> {
    return this.call('loadImage', [src, onMessage], async () => {
      const files = new Map<string, Buffer>();
      const extract = tar.extract();
      src.on('error', (err) => extract.destroy(err));
      src.pipe(extract);
      try {
        for await (const e of extract) {
          const data = await collect(e as AsyncIterable<Buffer>);
          if (e.header.type === 'file') files.set(e.header.name, data);
        }
      } catch (err) {
        src.destroy();
        throw new EngineError(`load image: ${(err as Error).message}`, { cause: err });
      }
      this.loaded.push([...files.keys()]);
      const m = files.get('manifest.json');
      if (!m)
        throw new EngineError('load image: the engine answered 500: open manifest.json: no such file or directory');
      const have = new Set([...this.images.values()].flatMap((i) => chainIds(i.diffIds)));
      const loaded: string[] = [];
      for (const item of JSON.parse(m.toString('utf8')) as {
        Config: string;
        RepoTags: string[] | null;
        Layers: string[];
      }[]) {
        const configJson = files.get(item.Config);
        if (!configJson) throw new EngineError(`load image: open ${item.Config}: no such file or directory`);
        const diffIds = (JSON.parse(configJson.toString('utf8')) as { rootfs: { diff_ids: string[] } }).rootfs.diff_ids;
        const chains = chainIds(diffIds);
        const layers: Buffer[] = [];
        for (const [k, file] of item.Layers.entries()) {
          const data = files.get(file);
          if (have.has(chains[k]!) && !data) {
            const owner = [...this.images.values()].find((i) => chainIds(i.diffIds)[k] === chains[k]);
            layers.push(owner!.layers[k]!);
            continue;
          }
          if (!data) throw new EngineError(`load image: open ${file}: no such file or directory`);
          if (`sha256:${sha(data)}` !== diffIds[k])
            throw new EngineError(`load image: the engine answered 500: invalid diffID for layer ${k}`);
          layers.push(data);
        }
        const id = this.storeImage(configJson, layers, item.RepoTags ?? []);
        for (const t of item.RepoTags ?? [id]) {
          const msg = item.RepoTags ? `Loaded image: ${t}\n` : `Loaded image ID: ${t}\n`;
          onMessage?.({ stream: msg });
          loaded.push(t);
        }
      }
      return loaded;
    });
  }

  pushImage(
    repo: string,
    tag: string,
    auth: RegistryAuth,
    onMessage?: (m: ProgressMessage) => void,
    signal?: AbortSignal,
  ): Promise<string> {
    return this.call('pushImage', [repo, tag, auth, onMessage, signal], () => {
      const i = this.findImage(`${repo}:${tag}`);
      if (!i) throw new EngineError(`push image ${repo}:${tag}: An image does not exist locally with the tag: ${repo}`);
      const digest = `sha256:${sha(Buffer.concat([i.configJson, ...i.layers]))}`;
      this.registry.set(`${repo}@${digest}`, i);
      return digest;
    });
  }

  pullImage(
    ref: string,
    auth: RegistryAuth,
    onMessage?: (m: ProgressMessage) => void,
    signal?: AbortSignal,
  ): Promise<void> {
    return this.call('pullImage', [ref, auth, onMessage, signal], () => {
      const i = this.registry.get(ref);
      if (!i) throw new EngineError(`pull image ${ref}: manifest unknown`);
      const id = this.storeImage(i.configJson, i.layers, []);
      this.images.get(id)!.digests.push(ref);
    });
  }

  tagImage(id: string, repo: string, tag: string) {
    return this.call('tagImage', [id, repo, tag], () => {
      const i = this.findImage(id);
      if (!i) throw new NotFoundError(`tag image ${id} as ${repo}:${tag}: No such image: ${id}`);
      this.tag(i, `${repo}:${tag}`);
    });
  }

  removeImage(ref: string) {
    return this.call('removeImage', [ref], () => {
      const i = this.findImage(ref);
      if (!i) return; // DOCKER: 404, ignored by DockerEngine.removeImage
      const byId = ref.startsWith('sha256:') || !i.repoTags.includes(normRef(ref));
      // DOCKER: by id, an image tagged in several repositories needs force (409).
      if (byId && new Set(i.repoTags.map((t) => splitRef(t)[0])).size > 1)
        throw new ConflictError(`remove image ${ref}: image is referenced in multiple repositories`);
      if (!byId && i.repoTags.length > 1) {
        i.repoTags = i.repoTags.filter((t) => t !== normRef(ref)); // untag only
        return;
      }
      // DOCKER: an image a container (running or not) uses is not removed (409).
      const user = [...this.containers.values()].find((c) => c.image === i.id);
      if (user)
        throw new ConflictError(
          `remove image ${ref}: conflict: unable to remove repository reference "${ref}" (must force) - container ${user.id.slice(0, 12)} is using its referenced image ${i.id.slice(7, 19)}`,
        );
      this.images.delete(i.id);
    });
  }

  holderImageIfPresent(): Promise<string | undefined> {
    return this.call('holderImageIfPresent', [], () => (this.findImage(HOLDER_IMAGE) ? HOLDER_IMAGE : undefined));
  }

  ensureHolderImage(): Promise<string> {
    return this.call('ensureHolderImage', [], async () => {
      if (this.findImage(HOLDER_IMAGE)) return HOLDER_IMAGE;
      // DOCKER: importing an empty tar gives an image of one empty layer.
      const empty = Buffer.alloc(1024);
      this.registerImage([HOLDER_IMAGE], [empty], {
        Cmd: ['/nonexistent'],
        Labels: { [LABEL_MANAGED]: 'true' },
      });
      return HOLDER_IMAGE;
    });
  }

  // ---- Engine: volumes ------------------------------------------------------------------

  private volumeInspectOf(v: FakeVolume): VolumeInspect {
    return {
      Name: v.name,
      Driver: v.driver,
      Options: v.options,
      Labels: v.labels,
      Mountpoint: `/var/lib/docker/volumes/${v.name}/_data`,
    };
  }

  inspectVolume(name: string): Promise<VolumeInspect | undefined> {
    return this.call('inspectVolume', [name], () => {
      const v = this.volumes.get(name);
      return v && this.volumeInspectOf(v);
    });
  }

  /** DOCKER GET /system/df?type=volume: UsageData.Size, the bytes of the volume's files. */
  volumeSize(name: string): Promise<number | undefined> {
    return this.call('volumeSize', [name], () => {
      const v = this.volumes.get(name);
      if (!v) return undefined;
      let n = 0;
      for (const f of v.files.values()) if (f.type === 'file') n += f.data.length;
      return n;
    });
  }

  createVolume(spec: {
    Name?: string;
    Driver?: string;
    DriverOpts?: Record<string, string>;
    Labels?: Record<string, string>;
  }): Promise<string> {
    return this.call('createVolume', [spec], () => {
      const name = spec.Name ?? sha(`anon-volume/${++this.seq}`);
      const driver = spec.Driver ?? 'local';
      const had = this.volumes.get(name);
      // DOCKER: creating a volume that exists (same driver) answers with it, no error.
      if (had) {
        if (had.driver !== driver)
          throw new ConflictError(
            `create volume ${name}: volume name ${name} already in use with driver ${had.driver}`,
          );
        return name;
      }
      this.makeVolume(
        name,
        driver,
        spec.Labels ?? null,
        spec.DriverOpts && Object.keys(spec.DriverOpts).length ? spec.DriverOpts : null,
      );
      return name;
    });
  }

  removeVolume(name: string) {
    return this.call('removeVolume', [name], () => {
      if (!this.volumes.has(name)) return; // DOCKER: 404, ignored by DockerEngine.removeVolume
      // DOCKER: a volume any container mounts (started or not) is in use (409).
      const users = this.volumeUsers(name);
      if (users.length)
        throw new ConflictError(`remove volume ${name}: volume is in use - [${users.map((c) => c.id).join(', ')}]`);
      this.volumes.delete(name);
    });
  }

  /** The mount of `c` a container path lies in, and the path inside it. */
  private resolve(c: FakeContainer, path: string): { mount?: FakeMount; rel: string; abs: string } {
    const abs = posix.normalize(path).replace(/\/+$/, '') || '/';
    const mounts = [...c.mounts].sort((a, b) => b.Destination.length - a.Destination.length);
    for (const m of mounts) {
      const d = m.Destination.replace(/\/+$/, '');
      if (abs === d) return { mount: m, rel: '', abs };
      if (abs.startsWith(`${d}/`)) return { mount: m, rel: abs.slice(d.length + 1), abs };
    }
    return { rel: abs.replace(/^\//, ''), abs };
  }

  /** Whether `abs` is a directory in `c`: a mount point, a parent of one, or one in its writable layer. */
  private isDir(c: FakeContainer, abs: string): boolean {
    if (abs === '/') return true;
    if (c.mounts.some((m) => m.Destination === abs || m.Destination.startsWith(`${abs}/`))) return true;
    return c.rootfs.get(abs.replace(/^\//, ''))?.type === 'directory';
  }

  /**
   * DOCKER GET /containers/{id}/archive?path=<dir>/. : a tar of the directory's content, the
   * first entry `./` (the directory itself), then every entry below it, paths sorted. Works on a
   * paused, stopped or never-started container alike.
   */
  getArchive(id: string, path: string): Promise<Readable> {
    return this.callBody('getArchive', [id, path], () => {
      const c = this.mustContainer(id, `read ${path} from container ${id}`);
      const { mount, rel } = this.resolve(c, path);
      const vol = mount?.Type === 'volume' ? this.volumes.get(mount.Source) : undefined;
      if (!vol || !/\/\.$/.test(path) || rel !== '')
        throw new NotFoundError(
          `read ${path} from container ${id}: Could not find the file ${path} in container ${id}`,
        );
      const entries: TarEntry[] = [{ name: './', type: 'directory', ...vol.root }];
      for (const [p, f] of [...vol.files.entries()].sort(([a], [b]) => walkOrder(a, b))) {
        const h = { mode: f.mode, uid: f.uid, gid: f.gid, mtime: f.mtime };
        if (f.type === 'directory') entries.push({ name: `./${p}/`, type: 'directory', ...h });
        else if (f.type === 'symlink') entries.push({ name: `./${p}`, type: 'symlink', linkname: f.linkname, ...h });
        else entries.push({ name: `./${p}`, ...h, data: f.data });
      }
      return packTar(entries);
    });
  }

  statPath(
    id: string,
    path: string,
  ): Promise<{ name: string; size: number; mode: number; mtime: string; linkTarget: string } | undefined> {
    return this.call('statPath', [id, path], () => {
      const c = this.mustContainer(id, `stat ${path} in container ${id}`);
      const { mount, rel, abs } = this.resolve(c, path);
      const vol = mount?.Type === 'volume' ? this.volumes.get(mount.Source) : undefined;
      if (vol && rel === '')
        return {
          name: posix.basename(abs),
          size: 4096,
          mode: 2 ** 31 + vol.root.mode,
          mtime: vol.root.mtime.toISOString(),
          linkTarget: '',
        };
      return this.isDir(c, abs)
        ? { name: posix.basename(abs), size: 4096, mode: 2 ** 31 + 0o755, mtime: EPOCH.toISOString(), linkTarget: '' }
        : undefined;
    });
  }

  /**
   * DOCKER PUT /containers/{id}/archive?path=<dir>: extracts the tar into <dir>, which must
   * exist (404); an entry for <dir> itself (`./`) is not applied to it; a read-only mount or
   * root refuses it. What came before a broken stream stays extracted.
   */
  putArchive(id: string, path: string, src: Readable, opts: { copyUIDGID?: boolean } = {}): Promise<void> {
    return this.call('putArchive', [id, path, src, opts], async () => {
      const what = `write ${path} into container ${id}`;
      const c = this.findContainer(id);
      if (!c) {
        src.destroy();
        throw new NotFoundError(`${what}: No such container: ${id}`);
      }
      const base = posix.normalize(path).replace(/\/+$/, '') || '/';
      if (!this.isDir(c, base)) {
        src.destroy();
        throw new NotFoundError(`${what}: Could not find the file ${path} in container ${id}`);
      }
      const extract = tar.extract();
      src.on('error', (err) => extract.destroy(err));
      src.pipe(extract);
      try {
        for await (const e of extract) {
          const h = e.header;
          const data = await collect(e as AsyncIterable<Buffer>);
          const abs = posix.join(base, h.name).replace(/\/+$/, '') || '/';
          if (abs === base) continue; // DOCKER: the target directory keeps its own attributes
          const { mount, rel } = this.resolve(c, abs);
          const meta = { mode: h.mode ?? 0o644, uid: h.uid ?? 0, gid: h.gid ?? 0, mtime: h.mtime ?? EPOCH };
          if (mount && !mount.RW)
            throw new EngineError(`${what}: the engine answered 403: mounted volume is marked read-only`);
          const vol = mount?.Type === 'volume' ? this.volumes.get(mount.Source) : undefined;
          if (vol && rel === '') {
            vol.root = meta; // an entry naming the mount point itself, from its parent
            continue;
          }
          if (!mount && c.hostConfig.ReadonlyRootfs === true)
            throw new EngineError(`${what}: the engine answered 403: container rootfs is marked read-only`);
          const files = vol ? vol.files : c.rootfs;
          const type = h.type === 'directory' ? 'directory' : h.type === 'symlink' ? 'symlink' : 'file';
          const key = vol ? rel : abs.replace(/^\//, '');
          if (type === 'file') {
            if (vol) this.writeFile(vol, key, data, meta);
            else files.set(key, { type, data, ...meta });
          } else files.set(key, { type, data: Buffer.alloc(0), ...meta, linkname: h.linkname ?? undefined });
        }
      } catch (err) {
        src.destroy();
        throw err instanceof FerryError ? err : new EngineError(`${what}: ${(err as Error).message}`, { cause: err });
      }
    });
  }

  // ---- Engine: networks -----------------------------------------------------------------

  private networkInspectOf(n: FakeNetwork): NetworkInspect {
    const containers = Object.fromEntries(
      [...this.containers.values()]
        .filter((c) => n.name in c.networks && (c.status === 'running' || c.status === 'paused'))
        .map((c) => [c.id, { Name: c.name, IPv4Address: '' }]),
    );
    return {
      Name: n.name,
      Id: n.id,
      Created: EPOCH.toISOString(),
      Scope: 'local',
      Driver: n.driver,
      EnableIPv6: n.enableIPv6,
      Internal: n.internal,
      Attachable: n.attachable,
      Ingress: false,
      IPAM: clone(n.ipam),
      Containers: containers,
      Options: { ...n.options },
      Labels: { ...n.labels },
    } as unknown as NetworkInspect;
  }

  inspectNetwork(name: string): Promise<NetworkInspect | undefined> {
    return this.call('inspectNetwork', [name], () => {
      const n = this.networks.get(name) ?? [...this.networks.values()].find((x) => x.id === name);
      return n && this.networkInspectOf(n);
    });
  }

  listNetworks(): Promise<NetworkInspect[]> {
    return this.call('listNetworks', [], () => [...this.networks.values()].map((n) => this.networkInspectOf(n)));
  }

  createNetwork(spec: Record<string, unknown>): Promise<string> {
    return this.call('createNetwork', [spec], () => {
      const name = String(spec.Name);
      // DOCKER: CheckDuplicate, and a subnet another network has, are refused.
      if (this.networks.has(name))
        throw new ConflictError(`create network ${name}: network with name ${name} already exists`);
      const ipam = (spec.IPAM ?? { Driver: 'default', Config: [] }) as FakeNetwork['ipam'];
      const subnets = (ipam.Config ?? []).map((x) => x.Subnet).filter(Boolean);
      for (const other of this.networks.values())
        if ((other.ipam.Config ?? []).some((x) => subnets.includes(x.Subnet)))
          throw new EngineError(
            `create network ${name}: the engine answered 403: Pool overlaps with other one on this address space`,
          );
      const n: FakeNetwork = {
        id: this.newId(`net-${name}`),
        name,
        driver: String(spec.Driver ?? 'bridge'),
        internal: !!spec.Internal,
        attachable: !!spec.Attachable,
        enableIPv6: !!spec.EnableIPv6,
        ipam: clone(ipam),
        options: { ...((spec.Options as Record<string, string>) ?? {}) },
        labels: { ...((spec.Labels as Record<string, string>) ?? {}) },
        builtin: false,
      };
      this.networks.set(name, n);
      return n.id;
    });
  }

  removeNetwork(name: string) {
    return this.call('removeNetwork', [name], () => {
      const n = this.networks.get(name);
      if (!n) return; // DOCKER: 404, ignored by DockerEngine.removeNetwork
      if (n.builtin)
        throw new EngineError(
          `remove network ${name}: the engine answered 403: ${name} is a pre-defined network and cannot be removed`,
        );
      // DOCKER: endpoints exist only for started containers; those keep the network (409).
      const active = [...this.containers.values()].filter(
        (c) => name in c.networks && (c.status === 'running' || c.status === 'paused'),
      );
      if (active.length)
        throw new ConflictError(
          `remove network ${name}: error while removing network: network ${name} id ${n.id} has active endpoints`,
        );
      this.networks.delete(name);
    });
  }

  connectNetwork(network: string, container: string, endpointConfig: Record<string, unknown>) {
    return this.call('connectNetwork', [network, container, endpointConfig], () => {
      const c = this.mustContainer(container, `connect container ${container} to network ${network}`);
      if (!this.networks.has(network))
        throw new NotFoundError(`connect container ${container} to network ${network}: network ${network} not found`);
      c.networks[network] = this.endpoint(network, c.id, endpointConfig);
    });
  }
}
