/**
 * The one module that owns dockerode. Everything above talks to an Engine (the interface below);
 * DockerEngine implements it, and every Docker error leaves here as a FerryError that says what failed.
 */
import { compareApi, negotiateApi, type VersionAnswer } from './api-version.js';
import http from 'node:http';
import { Readable, Writable } from 'node:stream';
import type Docker from 'dockerode';
import DockerClient from './dockerode.js';
import { ConflictError, EngineError, FerryError, NotFoundError } from '../errors.js';
import { describeEndpoint, type Endpoint } from './endpoint.js';
import { demux } from './demux.js';
import { bulkGet, type BulkAddress } from './bulk.js';
import { followJson, StreamReportedError, type ProgressMessage } from './progress.js';
import type { RegistryAuth } from './auth.js';
import type { HostShell } from '../hostaccess/shell.js';
import { createRunIdentity, type RunIdentity } from './run.js';
import { quirksFor, type EngineQuirks } from './quirks.js';
import { engineCalls } from '../util/debug.js';
import {
  dockerErr,
  field,
  keysOf,
  numberField,
  readable,
  statusOf,
  stringField,
  stringsField,
  untypedCall,
  type DockerErr,
} from './answers.js';

/** The newest Engine API version this code is written against. */

export const LABEL_MANAGED = 'io.ferry.managed';
export const LABEL_ROLE = 'io.ferry.role';
export const LABEL_RUN = 'io.ferry.run';
export const HOLDER_IMAGE = 'ferry-holder:empty';
/** Who made a helper (RunIdentity.owner), so a later run can remove helpers of a killed one. */
export const LABEL_OWNER = 'io.ferry.owner';

/** The first Engine API version whose `GET /images/get` takes `platform` (Docker 28). */
export const SAVE_PLATFORM_API = '1.48';

export interface EngineFacts {
  endpoint: string;
  serverVersion: string;
  apiVersion: string;
  os: string;
  arch: string;
  /** Podman's Docker-compatible API. Reported; what it changes is in `Engine.quirks` (quirks.ts). */
  podman: boolean;
  containerdStore: boolean;
  loggingDriver?: string;
  /** Rootless, or with user namespace remapping: owners on the host's disk are not those inside. */
  remapped: boolean;
  /** docker info Driver and DockerRootDir (where the engine keeps its layers), when it said. */
  storageDriver?: string;
  rootDir?: string;
}

export type ContainerInspect = Docker.ContainerInspectInfo & {
  Config: Docker.ContainerInspectInfo['Config'] & Record<string, unknown>;
};
export type ImageInspect = Docker.ImageInspectInfo;
/** One row of GET /containers/json: the fields ferry reads. */
export interface ContainerSummary {
  Id: string;
  Names: string[];
  Labels: Record<string, string>;
  Ports?: { IP?: string; PrivatePort?: number; PublicPort?: number; Type?: string }[];
  Mounts?: { Type?: string; Name?: string; Source?: string; Destination?: string }[];
  HostConfig?: { NetworkMode?: string };
  /** The id of the image it was created from, and the reference it was created with. */
  ImageID?: string;
  Image?: string;
  /** Unix seconds. */
  Created?: number;
}
/** One row of GET /images/json: the fields ferry reads. */
export interface ImageSummary {
  Id: string;
  RepoTags?: string[] | null;
  /** Unix seconds: when the image was built or committed (not when it came to this engine). */
  Created?: number;
}
export type VolumeInspect = {
  Name: string;
  Driver: string;
  Options: Record<string, string> | null;
  Labels: Record<string, string> | null;
  Mountpoint: string;
};
export type NetworkInspect = Docker.NetworkInspectInfo & {
  Internal?: boolean;
  Attachable?: boolean;
  EnableIPv6?: boolean;
};

/** What the daemon said, without dockerode's "(HTTP code 404) no such container -" prefix. */
function daemonMessage(err: DockerErr): string {
  const j = err.json;
  const jm = stringField(j, 'message');
  if (j && typeof j === 'object' && jm !== undefined) return jm;
  if (typeof j === 'string') return j;
  const m = typeof err.message === 'string' ? err.message : '';
  return m.replace(/^\(HTTP code \d+\)\s*[^-]*-\s*/, '').trim() || m;
}

/**
 * What ferry asks of a container engine. DockerEngine is the implementation over the Engine API
 * (dockerode); every failure leaves it as a FerryError that says what failed.
 */
export interface Engine {
  readonly facts: EngineFacts;
  /** How this engine differs from Docker, decided when it was connected (see quirks.ts). */
  readonly quirks: EngineQuirks;
  /** This run (its id and owner label on every helper), the same on every engine it connects to. */
  readonly run: RunIdentity;
  /** Commands on the engine's host (this machine, or the SSH host); absent for a TCP engine. */
  readonly host?: HostShell;
  /** Called before cleaning up after a failure: lets a dropped SSH connection be re-opened. */
  readonly prepareCleanup: () => void;

  /** What differs on this engine from a Docker engine with its own image store, for the operator. */
  /** What differs on this engine, for the operator: said once per run (information, not a warning). */
  differences(): string[];
  close(): void;
  apiAtLeast(v: string): boolean;
  /** An engine failure as a FerryError naming `what`. */
  mapError(err: unknown, what: string, map?: { notFound?: string; conflict?: string }): FerryError;
  /** Runtimes and log, volume and network drivers (GET /info); undefined when the engine does not say. */
  capabilities(): Promise<
    { runtimes: string[]; logDrivers: string[]; volumeDrivers: string[]; networkDrivers: string[] } | undefined
  >;

  // containers
  inspectContainer(nameOrId: string): Promise<ContainerInspect>;
  containerExists(name: string): Promise<boolean>;
  /** Running containers, or all of them (GET /containers/json). */
  listContainers(all?: boolean): Promise<ContainerSummary[]>;
  /** Every container (running or not) that carries all of `labels` (`key=value` or `key`). */
  listLabelledContainers(labels: string[]): Promise<ContainerSummary[]>;
  pause(id: string): Promise<void>;
  unpause(id: string): Promise<void>;
  /** Already stopped is not an error. */
  stop(id: string, timeoutSeconds?: number): Promise<void>;
  /** Already started is not an error. */
  start(id: string): Promise<void>;
  restart(id: string): Promise<void>;
  /** Create a container (the whole spec in the body); its id. */
  createContainer(name: string | undefined, body: Record<string, unknown>): Promise<string>;
  /** Gone already is not an error. */
  removeContainer(id: string, opts?: { force?: boolean; volumes?: boolean }): Promise<void>;
  /** POST /containers/{id}/rename: the container keeps its id, settings, writable layer and mounts. */
  renameContainer(id: string, name: string): Promise<void>;
  commit(
    id: string,
    repo: string,
    tag: string,
    opts: { pause: boolean; comment?: string; author?: string; labels?: Record<string, string> },
  ): Promise<string>;
  exec(
    id: string,
    cmd: string[],
    opts?: { user?: string; keep?: number; signal?: AbortSignal },
  ): Promise<{ exitCode: number; output: string }>;
  attachOutput(id: string): Promise<Readable>;
  waitExit(id: string): Promise<number>;
  containerLogs(id: string, tail?: number): Promise<string>;
  listLabelled(label: string): Promise<{ containers: string[]; volumes: string[]; networks: string[] }>;

  // images
  inspectImage(ref: string): Promise<ImageInspect>;
  /** The engine's tagged and untagged top-level images (GET /images/json, no intermediate layers). */
  listImages(): Promise<ImageSummary[]>;
  imageExists(ref: string): Promise<boolean>;
  /**
   * `docker save`. `platform`: the one platform to save (API 1.48+; older engines save every
   * platform the image's index names, blobs or not, and are not sent it).
   */
  saveImages(refs: string[], opts?: { platform?: { os: string; architecture: string } }): Promise<Readable>;
  loadImage(src: Readable, onMessage?: (m: ProgressMessage) => void): Promise<string[]>;
  pushImage(
    repo: string,
    tag: string,
    auth: RegistryAuth,
    onMessage?: (m: ProgressMessage) => void,
    signal?: AbortSignal,
  ): Promise<string>;
  pullImage(
    ref: string,
    auth: RegistryAuth,
    onMessage?: (m: ProgressMessage) => void,
    signal?: AbortSignal,
  ): Promise<void>;
  tagImage(id: string, repo: string, tag: string): Promise<void>;
  /** Gone already is not an error. */
  removeImage(ref: string): Promise<void>;
  holderImageIfPresent(): Promise<string | undefined>;
  ensureHolderImage(): Promise<string>;

  // volumes
  inspectVolume(name: string): Promise<VolumeInspect | undefined>;
  /**
   * A volume's disk usage as the engine counts it (GET /system/df?type=volume, API 1.42+): for a
   * progress total only. Undefined where the engine does not say cheaply (older APIs compute
   * every container's size for /system/df), or on any failure.
   */
  volumeSize(name: string): Promise<number | undefined>;
  createVolume(spec: {
    Name?: string;
    Driver?: string;
    DriverOpts?: Record<string, string>;
    Labels?: Record<string, string>;
  }): Promise<string>;
  /** Gone already is not an error. */
  removeVolume(name: string): Promise<void>;
  getArchive(id: string, path: string): Promise<Readable>;
  statPath(
    id: string,
    path: string,
  ): Promise<{ name: string; size: number; mode: number; mtime: string; linkTarget: string } | undefined>;
  putArchive(id: string, path: string, src: Readable, opts?: { copyUIDGID?: boolean }): Promise<void>;

  // networks
  inspectNetwork(name: string): Promise<NetworkInspect | undefined>;
  listNetworks(): Promise<NetworkInspect[]>;
  createNetwork(spec: Record<string, unknown>): Promise<string>;
  /** Gone already is not an error. */
  removeNetwork(name: string): Promise<void>;
  connectNetwork(network: string, container: string, endpointConfig: Record<string, unknown>): Promise<void>;
}

/**
 * A failed engine call as a FerryError naming `what`. Told apart by the HTTP status the engine
 * answered (404 not found, 409 conflict) or the connection's error code, never by the message
 * text, which is only shown. Pure; unit-tested.
 */
export function mapEngineError(
  err: unknown,
  what: string,
  endpoint: string,
  map: { notFound?: string; conflict?: string } = {},
): FerryError {
  if (err instanceof FerryError) return err;
  if (err instanceof StreamReportedError) return new EngineError(`${what}: ${err.message}`, { cause: err });
  const e = dockerErr(err);
  if (e.statusCode) {
    const msg = daemonMessage(e);
    if (e.statusCode === 404) return new NotFoundError(map.notFound ?? `${what}: ${msg}`, undefined, err);
    if (e.statusCode === 409) return new ConflictError(map.conflict ?? `${what}: ${msg}`);
    return new EngineError(`${what}: the engine answered ${e.statusCode}: ${msg}`, { cause: err });
  }
  if (
    e.code &&
    ['ECONNREFUSED', 'ENOENT', 'EACCES', 'ECONNRESET', 'EHOSTUNREACH', 'ETIMEDOUT', 'EPIPE'].includes(e.code)
  )
    return new EngineError(`${what}: lost the connection to the engine at ${endpoint} (${e.code})`, { cause: err });
  return new EngineError(`${what}: ${e.message ?? String(err)}`, { cause: err });
}

export class DockerEngine implements Engine {
  private constructor(
    private readonly docker: Docker,
    readonly facts: EngineFacts,
    private readonly agent: http.Agent | undefined,
    private readonly onClose: () => void,
    /** Where bulk GETs go straight to the socket (unix and plain TCP engines), with the API prefix. */
    private readonly bulk: { address: BulkAddress; prefix: string } | undefined,
    /** Commands on the engine's host (this machine, or the SSH host); absent for a TCP engine. */
    readonly host: HostShell | undefined,
    /** Called before cleaning up after a failure: lets a dropped SSH connection be re-opened. */
    readonly prepareCleanup: () => void,
    readonly run: RunIdentity,
  ) {
    this.quirks = quirksFor(facts);
  }

  readonly quirks: EngineQuirks;

  /**
   * Connect and negotiate the API version from /version (never pinned). `host`: commands on the
   * engine's host, where ferry has a way there; `prepareCleanup`: see Engine; `run`: this run's
   * identity (default: a new one).
   */
  static async connect(
    ep: Endpoint,
    opts: {
      agent?: http.Agent;
      onClose?: () => void;
      host?: HostShell;
      prepareCleanup?: () => void;
      run?: RunIdentity;
    } = {},
  ): Promise<DockerEngine> {
    const base = dockerOptions(ep, opts.agent);
    const where = describeEndpoint(ep);
    const probe = new DockerClient(base);
    let version: Docker.DockerVersion & VersionAnswer;
    try {
      version = await probe.version();
    } catch (err) {
      throw unreachable(err, where, ep.source);
    }
    const { version: useVersion, api, podman } = negotiateApi(version);
    const docker = new DockerClient({ ...base, ...(useVersion ? { version: useVersion } : {}) });
    const bulk = bulkAddress(ep);
    let containerdStore = false;
    let loggingDriver: string | undefined;
    let storageDriver: string | undefined;
    let rootDir: string | undefined;
    // Unknown (info refused): assume remapped, so that nothing relies on host paths.
    let remapped = true;
    try {
      const info: unknown = await docker.info();
      storageDriver = stringField(info, 'Driver');
      rootDir = stringField(info, 'DockerRootDir');
      containerdStore = driverStatus(info).some(([k, v]) => k === 'driver-type' && /containerd/.test(v));
      loggingDriver = stringField(info, 'LoggingDriver');
      remapped = (stringsField(info, 'SecurityOptions') ?? []).some((o) => /(^|,)name=(rootless|userns)(,|$)/.test(o));
    } catch {
      /* info is only advisory */
    }
    return new DockerEngine(
      docker,
      {
        endpoint: where,
        serverVersion: version.Version,
        apiVersion: api,
        os: version.Os,
        arch: version.Arch,
        podman,
        containerdStore,
        loggingDriver,
        remapped,
        storageDriver,
        rootDir,
      },
      opts.agent,
      opts.onClose ?? (() => {}),
      bulk && { address: bulk, prefix: useVersion ? `/${useVersion}` : '' },
      opts.host,
      opts.prepareCleanup ?? (() => {}),
      opts.run ?? createRunIdentity(),
    );
  }

  /** What differs on this engine from a Docker engine with its own image store, for the operator. */
  differences(): string[] {
    const out: string[] = [];
    if (this.facts.podman)
      out.push(
        `${this.facts.endpoint} is Podman (Docker-compatible API): its archive endpoint reports every file owner as 0:0, so ferry reads volumes there with the tar of the container's own image in a helper (an image without tar falls back to the archive endpoint, and ownership is lost); images it loads may be renamed with a localhost/ prefix (ferry tags them back)`,
      );
    if (this.facts.containerdStore)
      out.push(
        `${this.facts.endpoint} uses the containerd image store: saved images carry only this engine's platform, and an image migrated to it is sent without the layers its content store holds only where ferry reads that store on its host (root there, FERRY_HOST_LAYERS not 0); else whole`,
      );
    return out;
  }

  close(): void {
    this.agent?.destroy();
    this.onClose();
  }

  apiAtLeast(v: string): boolean {
    return compareApi(this.facts.apiVersion, v) >= 0;
  }

  /** Run an engine call; map its failure to a FerryError naming `what`. */
  private async call<T>(
    what: string,
    fn: () => Promise<T>,
    map: { notFound?: string; conflict?: string } = {},
  ): Promise<T> {
    engineCalls.hook?.(this.facts.endpoint, what);
    try {
      return await fn();
    } catch (err) {
      throw this.mapError(err, what, map);
    }
  }

  mapError(err: unknown, what: string, map: { notFound?: string; conflict?: string } = {}): FerryError {
    return mapEngineError(err, what, this.facts.endpoint, map);
  }

  /**
   * What this engine can run containers with (GET /info): its runtimes and its log, volume and
   * network drivers (plugins included, as `name:tag`). Undefined when the engine does not say.
   */
  async capabilities(): Promise<
    { runtimes: string[]; logDrivers: string[]; volumeDrivers: string[]; networkDrivers: string[] } | undefined
  > {
    try {
      const info: unknown = await this.docker.info();
      const plugins = field(info, 'Plugins');
      if (!plugins) return undefined;
      return {
        runtimes: keysOf(field(info, 'Runtimes')),
        logDrivers: stringsField(plugins, 'Log') ?? [],
        volumeDrivers: stringsField(plugins, 'Volume') ?? [],
        networkDrivers: stringsField(plugins, 'Network') ?? [],
      };
    } catch {
      return undefined;
    }
  }

  // ---- containers -------------------------------------------------------------------------

  inspectContainer(nameOrId: string): Promise<ContainerInspect> {
    return this.call(`inspect container ${nameOrId}`, () => this.docker.getContainer(nameOrId).inspect(), {
      notFound: `no such container: ${nameOrId}`,
    });
  }

  async containerExists(name: string): Promise<boolean> {
    try {
      await this.docker.getContainer(name).inspect();
      return true;
    } catch (err) {
      if (statusOf(err) === 404) return false;
      throw this.mapError(err, `inspect container ${name}`);
    }
  }

  listContainers(all = false): Promise<ContainerSummary[]> {
    return this.call('list containers', () => this.docker.listContainers({ all }));
  }

  listLabelledContainers(labels: string[]): Promise<ContainerSummary[]> {
    return this.call('list containers', () => this.docker.listContainers({ all: true, filters: { label: labels } }));
  }

  pause(id: string) {
    return this.call(`pause container ${id}`, () => this.docker.getContainer(id).pause());
  }
  unpause(id: string) {
    return this.call(`resume container ${id}`, () => this.docker.getContainer(id).unpause());
  }
  stop(id: string, timeoutSeconds?: number) {
    return this.call(`stop container ${id}`, async () => {
      try {
        await this.docker.getContainer(id).stop(timeoutSeconds === undefined ? {} : { t: timeoutSeconds });
      } catch (err) {
        if (statusOf(err) !== 304) throw err; // already stopped
      }
    });
  }
  start(id: string) {
    return this.call(`start container ${id}`, async () => {
      try {
        await this.docker.getContainer(id).start();
      } catch (err) {
        if (statusOf(err) !== 304) throw err; // already started
      }
    });
  }

  restart(id: string) {
    return this.call(`restart container ${id}`, () => this.docker.getContainer(id).restart());
  }

  renameContainer(id: string, name: string) {
    return this.call(`rename container ${id} to ${name}`, () => this.docker.getContainer(id).rename({ name }));
  }

  /** Create a container; the whole spec goes in the body, never the URL. */
  async createContainer(name: string | undefined, body: Record<string, unknown>): Promise<string> {
    const c = await this.call(
      `create container ${name ?? ''}`.trim(),
      () => this.docker.createContainer(rawOptions(name ? { name } : {}, body)),
      {
        conflict: `a container named ${name} already exists`,
        notFound: `create container ${name}: image ${String(body.Image)} is not on the engine`,
      },
    );
    return c.id;
  }

  removeContainer(id: string, opts: { force?: boolean; volumes?: boolean } = {}) {
    return this.call(`remove container ${id}`, async () => {
      try {
        await this.docker.getContainer(id).remove({ force: opts.force ?? true, v: opts.volumes ?? false });
      } catch (err) {
        if (statusOf(err) !== 404) throw err;
      }
    });
  }

  /** Commit a container's writable layer. `pause` false when the caller already paused or stopped it. */
  async commit(
    id: string,
    repo: string,
    tag: string,
    opts: { pause: boolean; comment?: string; author?: string; labels?: Record<string, string> },
  ): Promise<string> {
    const res: unknown = await this.call(`commit container ${id}`, () =>
      this.docker.getContainer(id).commit(
        rawOptions(
          {
            container: id,
            repo,
            tag,
            pause: opts.pause,
            comment: opts.comment ?? 'ferry backup',
            ...(opts.author ? { author: opts.author } : {}),
          },
          // Podman refuses a commit without a JSON body, and docker-modem drops a body of `{}`.
          opts.labels ? { Labels: opts.labels } : this.quirks.commitNeedsBody ? { Labels: {} } : {},
        ),
      ),
    );
    const image = stringField(res, 'Id');
    if (image === undefined)
      throw new EngineError(`commit container ${id}: the engine did not say which image it made`);
    return image;
  }

  /**
   * Run a command in a running container (docker exec, no TTY) and wait for it: exit code and
   * its output (stdout and stderr interleaved, the last `keep` bytes).
   */
  async exec(
    id: string,
    cmd: string[],
    opts: { user?: string; keep?: number; signal?: AbortSignal } = {},
  ): Promise<{ exitCode: number; output: string }> {
    const what = `run ${JSON.stringify(cmd.join(' ').slice(0, 60))} in container ${id}`;
    const container = this.docker.getContainer(id);
    const keep = opts.keep ?? 16_384;
    let output: Buffer = Buffer.alloc(0);
    const sink = new Writable({
      write(chunk: Buffer, _e, cb) {
        output = Buffer.concat([output, chunk]);
        if (output.length > keep) output = output.subarray(output.length - keep);
        cb();
      },
    });
    return this.call(what, async () => {
      const ex = await container.exec({
        Cmd: cmd,
        AttachStdout: true,
        AttachStderr: true,
        Tty: false,
        ...(opts.user ? { User: opts.user } : {}),
      });
      const stream = readable(await ex.start({ hijack: true, stdin: false }), what);
      const onAbort = () => stream.destroy(abortReason(opts.signal));
      opts.signal?.addEventListener('abort', onAbort, { once: true });
      try {
        await demux(stream, sink, sink);
      } finally {
        opts.signal?.removeEventListener('abort', onAbort);
      }
      // The stream ends when the process does; its exit code follows shortly after.
      for (let i = 0; i < 100; i++) {
        const info = await ex.inspect();
        if (!info.Running && info.ExitCode !== null && info.ExitCode !== undefined)
          return { exitCode: info.ExitCode, output: output.toString('utf8') };
        await new Promise((r) => setTimeout(r, 50));
      }
      throw new EngineError(`${what}: the engine did not report an exit code`);
    });
  }

  /**
   * Attach to a created (not yet started) container's stdout and stderr: call before start().
   * The stream is the engine's multiplexed format (see demux.ts); it ends when the process does.
   */
  attachOutput(id: string): Promise<Readable> {
    const what = `attach to container ${id}`;
    return this.call(what, async () =>
      readable(
        await this.docker.getContainer(id).attach({ stream: true, stdout: true, stderr: true, hijack: true }),
        what,
      ),
    );
  }

  /** Wait for a container to exit; its exit code. */
  async waitExit(id: string): Promise<number> {
    const r: unknown = await this.call(`wait for container ${id}`, () => this.docker.getContainer(id).wait());
    const code = numberField(r, 'StatusCode');
    if (code === undefined) throw new EngineError(`wait for container ${id}: the engine did not report an exit code`);
    return code;
  }

  /** The last `tail` lines a container logged (stdout and stderr interleaved; TTY or not). */
  async containerLogs(id: string, tail = 20): Promise<string> {
    // dockerode types the answer a Buffer; an engine that sends text/plain gets a string.
    const raw: Buffer | string = await this.call(`read the logs of container ${id}`, () =>
      this.docker.getContainer(id).logs({ stdout: true, stderr: true, follow: false, tail }),
    );
    const buf = Buffer.isBuffer(raw) ? raw : Buffer.from(raw);
    let text = '';
    const sink = new Writable({
      write(chunk: Buffer, _e, cb) {
        text += chunk.toString('utf8');
        cb();
      },
    });
    try {
      await demux(Readable.from([buf]), sink, sink);
      return text;
    } catch {
      return buf.toString('utf8'); // a TTY container's log is not multiplexed
    }
  }

  /** Names (ids for containers) of the containers, volumes and networks carrying `label` (`key=value`). */
  async listLabelled(label: string): Promise<{ containers: string[]; volumes: string[]; networks: string[] }> {
    const filters = { label: [label] };
    const containers = await this.call('list containers', () => this.docker.listContainers({ all: true, filters }));
    const volumes = await this.call('list volumes', () => this.docker.listVolumes({ filters }));
    const networks = await this.call('list networks', () => this.docker.listNetworks({ filters }));
    return {
      containers: containers.map((c) => c.Id),
      volumes: (volumes.Volumes ?? []).map((v) => v.Name),
      networks: networks.map((n) => n.Name),
    };
  }

  // ---- images -----------------------------------------------------------------------------

  inspectImage(ref: string): Promise<ImageInspect> {
    return this.call(`inspect image ${ref}`, () => this.docker.getImage(ref).inspect(), {
      notFound: `no such image: ${ref}`,
    });
  }

  listImages(): Promise<ImageSummary[]> {
    return this.call('list images', () => this.docker.listImages({ all: false }));
  }

  async imageExists(ref: string): Promise<boolean> {
    try {
      await this.docker.getImage(ref).inspect();
      return true;
    } catch (err) {
      if (statusOf(err) === 404) return false;
      throw this.mapError(err, `inspect image ${ref}`);
    }
  }

  /** `docker save` of one or more references, as a stream; of `platform` only where the API takes it (1.48+). */
  saveImages(refs: string[], opts: { platform?: { os: string; architecture: string } } = {}): Promise<Readable> {
    const platform =
      opts.platform && !this.facts.podman && this.apiAtLeast(SAVE_PLATFORM_API)
        ? JSON.stringify({ os: opts.platform.os, architecture: opts.platform.architecture })
        : undefined;
    const query = [
      ...refs.map((r) => `names=${encodeURIComponent(r)}`),
      ...(platform ? [`platform=${encodeURIComponent(platform)}`] : []),
    ].join('&');
    return this.call(
      `save image ${refs.join(', ')}${platform ? ` for ${opts.platform!.os}/${opts.platform!.architecture}` : ''}`,
      () => (this.bulk ? this.bulkGet(`/images/get?${query}`) : this.dockerSave(refs, platform)),
    );
  }

  /** dockerode's getImages (GET /images/get with several names), which its typings leave out. */
  private async dockerSave(refs: string[], platform?: string): Promise<Readable> {
    return readable(
      await untypedCall(this.docker, 'getImages', [{ names: refs, ...(platform ? { platform } : {}) }]),
      'save images',
    );
  }

  private bulkGet(path: string): Promise<Readable> {
    return bulkGet(this.bulk!.address, `${this.bulk!.prefix}${path}`);
  }

  /** `docker load` from a stream; resolves only once the engine has finished and reported success. */
  async loadImage(src: Readable, onMessage?: (m: ProgressMessage) => void): Promise<string[]> {
    const msgs = await uploading(src, async (signal) => {
      const res = await this.call('load image', async () =>
        readable(await this.docker.loadImage(src, { quiet: true, abortSignal: signal }), 'load image'),
      );
      try {
        return await followJson(res, onMessage);
      } catch (err) {
        throw this.mapError(err, 'load image');
      }
    });
    const loaded: string[] = [];
    for (const m of msgs) {
      const s = m.stream ?? '';
      const mm = /Loaded image(?: ID)?: (\S+)/.exec(s);
      if (mm) loaded.push(mm[1]!);
    }
    return loaded;
  }

  /**
   * `docker push <repo>:<tag>`. The engine answers 200 and reports failures inside the stream,
   * which fail the push here. Resolves with the manifest digest the registry stored.
   * `auth` is always sent (possibly `{}`): Docker 28.3 and older refuse a push without it.
   */
  async pushImage(
    repo: string,
    tag: string,
    auth: RegistryAuth,
    onMessage?: (m: ProgressMessage) => void,
    signal?: AbortSignal,
  ): Promise<string> {
    const what = `push image ${repo}:${tag}`;
    const res = await this.call(what, async () =>
      readable(
        await this.docker.getImage(repo).push({
          tag,
          authconfig: { ...auth },
          ...(signal ? { abortSignal: signal } : {}),
        }),
        what,
      ),
    );
    let digest: string | undefined;
    try {
      await followJson(res, (m) => {
        digest = pushedDigest(m) ?? digest;
        onMessage?.(m);
      });
    } catch (err) {
      res.destroy();
      throw this.registryError(err, what);
    }
    if (!digest)
      throw new EngineError(`${what}: the engine did not report the digest of the pushed image`, {
        hint: 'the push may not have completed; check the registry',
      });
    return digest;
  }

  /** `docker pull <ref>` (a `repo@sha256:...` reference), to its end; any failure names the image. */
  async pullImage(
    ref: string,
    auth: RegistryAuth,
    onMessage?: (m: ProgressMessage) => void,
    signal?: AbortSignal,
  ): Promise<void> {
    const what = `pull image ${ref}`;
    const at = ref.indexOf('@');
    const colon = ref.lastIndexOf(':');
    const [fromImage, tag] =
      at >= 0
        ? [ref.slice(0, at), ref.slice(at + 1)]
        : colon > ref.lastIndexOf('/')
          ? [ref.slice(0, colon), ref.slice(colon + 1)]
          : [ref, 'latest'];
    let res: Readable;
    try {
      res = readable(
        await this.docker.createImage({ ...auth }, { fromImage, tag, ...(signal ? { abortSignal: signal } : {}) }),
        what,
      );
    } catch (err) {
      throw this.registryError(err, what);
    }
    try {
      await followJson(res, onMessage);
    } catch (err) {
      res.destroy();
      throw this.registryError(err, what);
    }
  }

  /** A push/pull failure: always an EngineError naming the image (a missing image or manifest included). */
  private registryError(err: unknown, what: string): FerryError {
    if (err instanceof FerryError) return err;
    const e = dockerErr(err);
    const hint =
      'check that the registry is reachable from the engine, and the credentials (docker config, or --registry-auth-file)';
    if (err instanceof StreamReportedError) return new EngineError(`${what}: ${err.message}`, { cause: err, hint });
    if (e.statusCode)
      return new EngineError(`${what}: the engine answered ${e.statusCode}: ${daemonMessage(e)}`, { cause: err, hint });
    const m = this.mapError(err, what);
    return m instanceof EngineError ? m : new EngineError(m.message, { cause: err, hint });
  }

  tagImage(id: string, repo: string, tag: string) {
    return this.call(`tag image ${id} as ${repo}:${tag}`, () => this.docker.getImage(id).tag({ repo, tag }));
  }

  removeImage(ref: string) {
    return this.call(`remove image ${ref}`, async () => {
      try {
        await this.docker.getImage(ref).remove({ noprune: false });
      } catch (err) {
        if (statusOf(err) !== 404) throw err;
      }
    });
  }

  /** The holder image if the engine already has it (a dry run imports nothing). */
  async holderImageIfPresent(): Promise<string | undefined> {
    return (await this.imageExists(HOLDER_IMAGE)) ? HOLDER_IMAGE : undefined;
  }

  /**
   * An image with no files at all, imported from an empty tar: a container created from it (and
   * never started) mounts volumes for the archive endpoints with no binaries and no pull.
   */
  async ensureHolderImage(): Promise<string> {
    if (await this.imageExists(HOLDER_IMAGE)) return HOLDER_IMAGE;
    const emptyTar = Readable.from([Buffer.alloc(1024)]);
    // `repo` carries the tag (the API allows it): Podman ignores a separate `tag` on import.
    const res = await this.call('import the empty holder image', async () =>
      readable(
        await this.docker.importImage(emptyTar, {
          repo: HOLDER_IMAGE,
          changes: ['CMD ["/nonexistent"]', `LABEL ${LABEL_MANAGED}=true`],
        }),
        'import the empty holder image',
      ),
    );
    try {
      await followJson(res);
    } catch (err) {
      throw this.mapError(err, 'import the empty holder image');
    }
    if (!(await this.imageExists(HOLDER_IMAGE)))
      throw new EngineError(`the engine did not create the holder image ${HOLDER_IMAGE}`, {
        hint: 'ferry needs an image to mount volumes from; this engine refused to import an empty one',
      });
    return HOLDER_IMAGE;
  }

  // ---- volumes ----------------------------------------------------------------------------

  async inspectVolume(name: string): Promise<VolumeInspect | undefined> {
    try {
      return await this.docker.getVolume(name).inspect();
    } catch (err) {
      if (statusOf(err) === 404) return undefined;
      throw this.mapError(err, `inspect volume ${name}`);
    }
  }

  async volumeSize(name: string): Promise<number | undefined> {
    if (!this.apiAtLeast('1.42')) return undefined;
    try {
      const modem = this.docker.modem;
      const df = await this.call(
        'volume sizes (system df)',
        () =>
          new Promise<unknown>((resolve, reject) =>
            modem.dial(
              { path: '/system/df?', method: 'GET', options: { type: 'volume' }, statusCodes: { 200: true } },
              (err, data) => (err ? reject(err) : resolve(data)),
            ),
          ),
      );
      const volumes = field(df, 'Volumes');
      const own: unknown = Array.isArray(volumes) ? volumes.find((v) => stringField(v, 'Name') === name) : undefined;
      const size = numberField(field(own, 'UsageData'), 'Size');
      return size !== undefined && size >= 0 ? size : undefined; // -1: not computed
    } catch {
      return undefined;
    }
  }

  async createVolume(spec: {
    Name?: string;
    Driver?: string;
    DriverOpts?: Record<string, string>;
    Labels?: Record<string, string>;
  }): Promise<string> {
    // dockerode resolves with a Volume handle ({name}); the engine's own answer has {Name}.
    const v: unknown = await this.call(`create volume ${spec.Name ?? ''}`.trim(), () => this.docker.createVolume(spec));
    const name = stringField(v, 'Name') ?? stringField(v, 'name');
    if (!name)
      throw new EngineError(`create volume ${spec.Name ?? ''}: the engine did not say which volume it created`);
    return name;
  }

  removeVolume(name: string) {
    return this.call(`remove volume ${name}`, async () => {
      try {
        await this.docker.getVolume(name).remove();
      } catch (err) {
        if (statusOf(err) !== 404) throw err;
      }
    });
  }

  /** GET /containers/{id}/archive: a tar stream of `path`. */
  getArchive(id: string, path: string): Promise<Readable> {
    return this.call(`read ${path} from container ${id}`, () =>
      this.bulk
        ? this.bulkGet(`/containers/${encodeURIComponent(id)}/archive?path=${encodeURIComponent(path)}`)
        : this.docker
            .getContainer(id)
            .getArchive({ path })
            .then((r) => readable(r, `read ${path} from container ${id}`)),
    );
  }

  /**
   * HEAD /containers/{id}/archive: what the engine sees at `path` in the container (mode in Go's
   * os.FileMode bits, mtime), from its X-Docker-Container-Path-Stat header. Undefined when absent.
   */
  async statPath(
    id: string,
    path: string,
  ): Promise<{ name: string; size: number; mode: number; mtime: string; linkTarget: string } | undefined> {
    const res: unknown = await this.call(`stat ${path} in container ${id}`, () =>
      this.docker.getContainer(id).infoArchive({ path }),
    );
    if (res instanceof Readable) res.resume();
    const h = stringField(field(res, 'headers'), 'x-docker-container-path-stat');
    if (!h) return undefined;
    try {
      return JSON.parse(Buffer.from(h, 'base64').toString('utf8')) as {
        name: string;
        size: number;
        mode: number;
        mtime: string;
        linkTarget: string;
      };
    } catch {
      return undefined;
    }
  }

  /** PUT /containers/{id}/archive: extract a tar stream at `path`. Resolves once the engine has extracted it. */
  async putArchive(id: string, path: string, src: Readable, opts: { copyUIDGID?: boolean } = {}): Promise<void> {
    // As a string: docker-modem leaves false values out of the query.
    const query = { path, ...(opts.copyUIDGID !== undefined ? { copyUIDGID: String(opts.copyUIDGID) } : {}) };
    await uploading(src, (signal) =>
      this.call(`write ${path} into container ${id}`, async () => {
        const res: unknown = await this.docker.getContainer(id).putArchive(src, { ...query, abortSignal: signal });
        if (res instanceof Readable) res.resume();
      }),
    );
  }

  // ---- networks ---------------------------------------------------------------------------

  async inspectNetwork(name: string): Promise<NetworkInspect | undefined> {
    try {
      return await this.docker.getNetwork(name).inspect();
    } catch (err) {
      if (statusOf(err) === 404) return undefined;
      throw this.mapError(err, `inspect network ${name}`);
    }
  }

  /** Every network on the engine, with its IPAM configuration (GET /networks). */
  listNetworks(): Promise<NetworkInspect[]> {
    return this.call('list networks', async () => await this.docker.listNetworks());
  }

  async createNetwork(spec: Record<string, unknown>): Promise<string> {
    const n = await this.call(`create network ${String(spec.Name)}`, () =>
      this.docker.createNetwork(networkOptions(spec)),
    );
    return n.id;
  }

  removeNetwork(name: string) {
    return this.call(`remove network ${name}`, async () => {
      try {
        await this.docker.getNetwork(name).remove();
      } catch (err) {
        if (statusOf(err) !== 404) throw err;
      }
    });
  }

  connectNetwork(network: string, container: string, endpointConfig: Record<string, unknown>) {
    return this.call(`connect container ${container} to network ${network}`, () =>
      this.docker.getNetwork(network).connect({ Container: container, EndpointConfig: endpointConfig }),
    );
  }
}

function dockerOptions(ep: Endpoint, agent?: http.Agent): Docker.DockerOptions {
  // Pass host/socketPath explicitly: docker-modem otherwise lets DOCKER_HOST override them.
  switch (ep.kind) {
    case 'unix':
      return { socketPath: ep.socketPath, host: undefined, protocol: undefined };
    case 'tcp':
      return {
        socketPath: undefined,
        host: ep.host,
        port: ep.port,
        protocol: ep.tls ? 'https' : 'http',
        ...(ep.tls ? { ca: ep.tls.ca, cert: ep.tls.cert, key: ep.tls.key } : {}),
      };
    case 'ssh':
      if (!agent) throw new EngineError('an ssh engine needs an SSH transport agent');
      return {
        socketPath: undefined,
        protocol: 'http',
        host: 'remote-engine.invalid',
        port: 80,
        agent,
      };
  }
}

/** Where bulk GETs may go straight to the socket: unix sockets and TCP without TLS. */
function bulkAddress(ep: Endpoint): BulkAddress | undefined {
  if (ep.kind === 'unix') return { path: ep.socketPath };
  if (ep.kind === 'tcp' && !ep.tls) return { host: ep.host, port: ep.port };
  return undefined;
}

function unreachable(cause: unknown, where: string, source: string): FerryError {
  const err = dockerErr(cause);
  const code = err.code ?? '';
  let hint = 'check that the Docker engine is running and that you may use its socket';
  if (code === 'ENOENT') hint = `no socket at ${where}; is dockerd running? (engine chosen by ${source})`;
  if (code === 'EACCES') hint = `permission denied on ${where}: run as root or join the docker group`;
  if (code === 'ECONNREFUSED') hint = `nothing listens at ${where} (engine chosen by ${source})`;
  return new EngineError(`cannot reach the Docker engine at ${where}: ${code || err.message}`, {
    hint,
    cause,
    code: 'ENGINE_UNREACHABLE',
  });
}

/** The digest a push reports: `aux.Digest`, or the status line "<tag>: digest: sha256:... size: N". */
export function pushedDigest(m: ProgressMessage): string | undefined {
  const aux = m.aux?.Digest;
  if (typeof aux === 'string' && /^sha256:[0-9a-f]{64}$/.test(aux)) return aux;
  const s = /(?:^|\s)digest: (sha256:[0-9a-f]{64})(?:\s|$)/.exec(m.status ?? '');
  return s?.[1];
}

/** POST /networks/create: the body ferry built (model/spec.ts networkCreateOptions), sent as it is. */
function networkOptions(spec: Record<string, unknown>): Docker.NetworkCreateOptions {
  return { ...spec, Name: String(spec.Name) };
}

/**
 * dockerode's raw form of a call: `_query` goes into the URL and `_body` is sent as it is (the
 * whole create body ferry built, which dockerode's option types do not describe).
 */
function rawOptions(
  query: Record<string, unknown>,
  body: Record<string, unknown>,
): Docker.ContainerCreateOptions & { _query: Record<string, unknown>; _body: Record<string, unknown> } {
  return { _query: query, _body: body };
}

/** docker info's DriverStatus: [key, value] pairs. */
function driverStatus(info: unknown): [string, string][] {
  const v = field(info, 'DriverStatus');
  if (!Array.isArray(v)) return [];
  const pairs: [string, string][] = [];
  const items: unknown[] = v;
  for (const p of items)
    if (Array.isArray(p) && typeof p[0] === 'string' && typeof p[1] === 'string') pairs.push([p[0], p[1]]);
  return pairs;
}

/** Why a run was aborted, as the error a destroyed stream carries (ferry aborts with Errors only). */
function abortReason(signal: AbortSignal | undefined): Error | undefined {
  const r: unknown = signal?.reason;
  return r instanceof Error ? r : undefined;
}

/**
 * An upload of `src` to the engine (docker-modem pipes it into the request). An error of `src`
 * (a member that fails to decrypt or decompress), before the upload starts or during it, would
 * leave the request open and the engine waiting for the rest: the request is aborted and `src`'s
 * error, the cause, is what fails. If the engine fails first, `src` is stopped.
 */
export async function uploading<T>(src: Readable, upload: (signal: AbortSignal) => Promise<T>): Promise<T> {
  if (src.errored) throw src.errored;
  const abort = new AbortController();
  let srcError: unknown;
  const onSrcError = (err: unknown): void => {
    srcError ??= err;
    abort.abort();
  };
  src.once('error', onSrcError);
  try {
    return await upload(abort.signal);
  } catch (err) {
    src.destroy();
    throw srcError ?? err;
  } finally {
    src.off('error', onSrcError);
  }
}
