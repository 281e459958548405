/**
 * One persistent ssh2 connection per host per run. Every Docker API request and every SFTP
 * stream is a channel on it: no login per request (sshd's MaxStartups), host keys checked
 * against known_hosts, ~/.ssh/config honoured, ssh-agent and key files (encrypted ones with a
 * passphrase prompt on a terminal).
 */
import { appendFileSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import fs from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { homedir } from 'node:os';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import type { CipherAlgorithm, ConnectConfig, SFTPWrapper } from 'ssh2';
import { loadSsh2 } from './ssh2.js';

import { EngineError, FerryError, EXIT, UsageError } from '../errors.js';
import { resolveSshConfig } from './config.js';
import { checkHostKey, knownHostsLine, knownHostsName } from './known-hosts.js';

export class HostKeyError extends FerryError {
  constructor(message: string, hint: string) {
    super('HOST_KEY', EXIT.ENGINE, message, { hint });
  }
}

export interface SshTarget {
  user?: string;
  host: string;
  port?: number;
}

export interface SshOptions {
  /** Add an unknown host key to known_hosts (never a changed one). */
  acceptNew?: boolean;
  env?: NodeJS.ProcessEnv;
  home?: string;
  /** Ask for a key's passphrase (only on a terminal). */
  askPassphrase?: (keyFile: string) => Promise<string | undefined>;
  warn?: (msg: string) => void;
}

export interface SshConnection {
  readonly describe: string;
  /** True once the connection has dropped; the pool then opens a new one. */
  readonly closed: boolean;
  /** A stream to a unix socket on the remote host (direct-streamlocal), or a dial-stdio fallback. */
  openSocket(remotePath: string): Promise<Duplex>;
  exec(command: string): Promise<Duplex & { stderr: NodeJS.ReadableStream; exitCode: Promise<number | null> }>;
  sftp(): Promise<SFTPWrapper>;
  close(): void;
}

/** Ciphers in order of speed on machines with AES-NI; ssh2 picks the first the server supports. */
const CIPHERS: CipherAlgorithm[] = [
  'aes128-gcm@openssh.com',
  'aes256-gcm@openssh.com',
  'aes128-ctr',
  'aes192-ctr',
  'aes256-ctr',
  'chacha20-poly1305@openssh.com',
];

export async function connectSsh(target: SshTarget, opts: SshOptions = {}): Promise<SshConnection> {
  const env = opts.env ?? process.env;
  const home = opts.home ?? env.HOME ?? homedir();
  const cfgPath = path.join(home, '.ssh', 'config');
  const cfg = resolveSshConfig(existsSync(cfgPath) ? readFileSync(cfgPath, 'utf8') : '', target.host, home);
  const host = cfg.hostName ?? target.host;
  const port = target.port ?? cfg.port ?? 22;
  const user = target.user ?? cfg.user ?? env.USER ?? 'root';
  const knownFiles = cfg.userKnownHostsFiles ?? [
    path.join(home, '.ssh', 'known_hosts'),
    path.join(home, '.ssh', 'known_hosts2'),
  ];
  const describe = `${user}@${host}:${port}${host !== target.host ? ` (${target.host})` : ''}`;

  // Keys: explicit IdentityFile entries first, then the defaults (unless IdentitiesOnly).
  const defaults = ['id_ed25519', 'id_ecdsa', 'id_rsa'].map((f) => path.join(home, '.ssh', f));
  const keyFiles = [...cfg.identityFiles, ...(cfg.identitiesOnly ? [] : defaults)].filter(
    (f, i, a) => a.indexOf(f) === i && existsSync(f),
  );
  const keys: { file: string; key: Buffer; passphrase?: string }[] = [];
  for (const file of keyFiles) {
    const key = await fs.readFile(file);
    const parsed = loadSsh2().utils.parseKey(key);
    if (!(parsed instanceof Error)) {
      keys.push({ file, key });
      continue;
    }
    if (!/encrypted|passphrase/i.test(parsed.message)) continue;
    const pass = opts.askPassphrase ? await opts.askPassphrase(file) : undefined;
    if (pass === undefined) {
      opts.warn?.(
        `skipping ${file}: it is encrypted and there is no terminal to ask for its passphrase (use ssh-agent)`,
      );
      continue;
    }
    const ok = loadSsh2().utils.parseKey(key, pass);
    if (ok instanceof Error) throw new UsageError(`wrong passphrase for ${file}`);
    keys.push({ file, key, passphrase: pass });
  }
  const agent = env.SSH_AUTH_SOCK && existsSync(env.SSH_AUTH_SOCK) ? env.SSH_AUTH_SOCK : undefined;
  if (!agent && !keys.length)
    throw new UsageError(
      `no way to log in to ${describe}: no ssh-agent (SSH_AUTH_SOCK) and no key file`,
      'start ssh-agent and ssh-add your key, or set IdentityFile in ~/.ssh/config',
    );

  let hostKeyProblem: FerryError | undefined;
  const hostVerifier = (key: Buffer): boolean => {
    const files = knownFiles.filter((f) => existsSync(f)).map((f) => ({ path: f, text: readFileSync(f, 'utf8') }));
    const v = checkHostKey(files, host, port, key);
    if (v.status === 'match') return true;
    const name = knownHostsName(host, port);
    if (v.status === 'changed') {
      hostKeyProblem = new HostKeyError(
        `the host key of ${name} has CHANGED (it does not match ${v.file}:${v.line}); refusing to connect`,
        'someone may be intercepting the connection, or the host was reinstalled; check with its owner, then remove the old line from known_hosts',
      );
      return false;
    }
    if (v.status === 'revoked') {
      hostKeyProblem = new HostKeyError(
        `the host key of ${name} is marked @revoked in known_hosts; refusing to connect`,
        'check with the host owner',
      );
      return false;
    }
    if (!opts.acceptNew) {
      hostKeyProblem = new HostKeyError(
        `the host key of ${name} is not in known_hosts (${knownFiles.join(', ')}); refusing to connect`,
        `check the key with the host owner and add it (ssh-keyscan -p ${port} ${host} >> ~/.ssh/known_hosts), or pass --ssh-accept-new`,
      );
      return false;
    }
    const file = knownFiles[0]!;
    try {
      require_dir(path.dirname(file));
      fsAppend(file, knownHostsLine(host, port, key));
      opts.warn?.(`added the host key of ${name} (${keyLabel(key)}) to ${file}`);
    } catch (err) {
      opts.warn?.(`could not record the host key in ${file}: ${(err as Error).message}`);
    }
    return true;
  };

  const client = new (loadSsh2().Client)();
  const config: ConnectConfig = {
    sock: corkedSocket(host, port),
    host,
    port,
    username: user,
    agent,
    readyTimeout: 20_000,
    keepaliveInterval: 15_000,
    keepaliveCountMax: 4,
    hostVerifier,
    algorithms: { cipher: CIPHERS },
    authHandler: (() => {
      const methods: unknown[] = [];
      if (agent) methods.push({ type: 'agent', username: user, agent });
      for (const k of keys) methods.push({ type: 'publickey', username: user, key: k.key, passphrase: k.passphrase });
      let i = 0;
      return (_methodsLeft: unknown, _partial: unknown, cb: (m: unknown) => void) =>
        cb(i < methods.length ? methods[i++] : false);
      // ssh2's types leave out `false`, which ends authentication (no method left): cast
    })() as never,
  };
  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error & { level?: string }) => {
      client.removeListener('ready', onReady);
      if (hostKeyProblem) return reject(hostKeyProblem);
      if (err.level === 'client-authentication')
        return reject(
          new EngineError(
            `ssh ${describe}: no key was accepted (tried ${[agent ? 'ssh-agent' : '', ...keys.map((k) => k.file)].filter(Boolean).join(', ')})`,
            { cause: err, hint: 'check the user and authorized_keys on the host' },
          ),
        );
      reject(
        new EngineError(`ssh ${describe}: ${err.message}`, {
          cause: err,
          hint: 'check the address and that sshd runs there',
        }),
      );
    };
    const onReady = () => {
      client.removeListener('error', onError);
      resolve();
    };
    client.once('ready', onReady).once('error', onError).connect(config);
  });
  client.on('error', () => {}); // later errors surface on the channels that fail
  let closed = false;
  // ssh2 does not always fail the channels of a connection that drops: do it, so that every
  // request and stream on them ends with an error instead of hanging.
  const channels = new Set<Duplex>();
  const track = <T extends Duplex>(ch: T): T => {
    channels.add(ch);
    ch.once('close', () => channels.delete(ch));
    return ch;
  };
  client.on('close', () => {
    closed = true;
    const err = new EngineError(`the ssh connection to ${describe} was lost`, {
      hint: 'check the network and the host; nothing half-made is left on it when ferry can reach it again',
    });
    for (const ch of channels) ch.destroy(err);
    channels.clear();
  });

  let streamlocalRefused = false;
  let sftpSession: Promise<SFTPWrapper> | undefined;
  return {
    describe,
    get closed() {
      return closed;
    },
    openSocket(remotePath: string): Promise<Duplex> {
      const dialStdio = () =>
        new Promise<Duplex>((resolve, reject) => {
          const cmd = `docker ${remotePath !== '/var/run/docker.sock' ? `--host unix://${remotePath} ` : ''}system dial-stdio`;
          client.exec(cmd, (err, ch) =>
            err
              ? reject(new EngineError(`ssh ${describe}: ${cmd}: ${err.message}`, { cause: err }))
              : resolve(track(ch)),
          );
        });
      if (streamlocalRefused) return dialStdio();
      return new Promise<Duplex>((resolve, reject) => {
        if (closed) return reject(new EngineError(`the ssh connection to ${describe} was lost`));
        client.openssh_forwardOutStreamLocal(remotePath, (err, ch) => {
          if (!err) return resolve(track(ch));
          if (/not connected/i.test(err.message)) {
            closed = true; // the 'close' event may not have arrived yet
            return reject(new EngineError(`the ssh connection to ${describe} was lost`, { cause: err }));
          }
          // sshd with AllowStreamLocalForwarding no: fall back to the docker CLI on the host.
          if (/prohibited|denied|refused|failure/i.test(err.message) && !/No such file/i.test(err.message)) {
            streamlocalRefused = true;
            opts.warn?.(
              `ssh ${describe}: socket forwarding refused (${err.message}); using \`docker system dial-stdio\``,
            );
            dialStdio().then(resolve, reject);
            return;
          }
          reject(new EngineError(`ssh ${describe}: cannot reach ${remotePath}: ${err.message}`, { cause: err }));
        });
      });
    },
    exec(command: string) {
      return new Promise((resolve, reject) => {
        client.exec(command, (err, ch) => {
          if (err) return reject(new EngineError(`ssh ${describe}: ${command}: ${err.message}`, { cause: err }));
          // No exit status when the connection drops: the channel is closed (destroyed) instead.
          const exitCode = new Promise<number | null>((res) => {
            ch.once('exit', (code: number | null) => res(code));
            ch.once('close', () => res(null));
          });
          resolve(Object.assign(track(ch), { stderr: ch.stderr, exitCode }));
        });
      });
    },
    sftp() {
      // One SFTP session per connection, shared by every file of the run (requests on it run
      // concurrently): a session each would run into the server's MaxSessions (10 by default)
      // as soon as a store holds more bundles than that.
      if (!sftpSession) {
        const s = new Promise<SFTPWrapper>((resolve, reject) =>
          client.sftp((err, w) =>
            err ? reject(new EngineError(`ssh ${describe}: sftp: ${err.message}`, { cause: err })) : resolve(w),
          ),
        );
        sftpSession = s;
        const forget = () => {
          if (sftpSession === s) sftpSession = undefined;
        };
        s.then((w) => w.once('close', forget), forget);
      }
      return sftpSession;
    },
    close() {
      client.end();
    },
  };
}

function keyLabel(key: Buffer): string {
  return key.toString('ascii', 4, 4 + key.readUInt32BE(0));
}

function require_dir(d: string) {
  mkdirSync(d, { recursive: true, mode: 0o700 });
}
function fsAppend(f: string, line: string) {
  appendFileSync(f, line, { mode: 0o600 });
}

/** One connection per host per run, shared by every stream. */
export class SshPool {
  private readonly conns = new Map<string, Promise<SshConnection>>();
  private reconnect = false;
  constructor(private readonly opts: SshOptions = {}) {}

  /**
   * A connection that drops in the middle of a run fails the run: no silent reconnection that
   * could hide a cut. Cleanup after the failure may reconnect, so that it can reach the host.
   */
  allowReconnect(): void {
    this.reconnect = true;
  }

  async get(target: SshTarget): Promise<SshConnection> {
    const k = `${target.user ?? ''}@${target.host}:${target.port ?? ''}`;
    let c = this.conns.get(k);
    // A dropped connection is replaced (e.g. so that a rollback can still reach the host).
    if (
      c &&
      (await c.then(
        (x) => x.closed,
        () => true,
      ))
    ) {
      if (!this.reconnect)
        throw new EngineError(`the ssh connection to ${target.host} was lost`, {
          hint: 'check the network and the host, then run ferry again',
        });
      this.conns.delete(k);
      c = undefined;
    }
    if (!c) {
      c = connectSsh(target, this.opts);
      c.catch(() => this.conns.delete(k));
      this.conns.set(k, c);
    }
    return c;
  }

  async closeAll(): Promise<void> {
    for (const c of this.conns.values()) (await c.catch(() => undefined))?.close();
    this.conns.clear();
  }
}

/**
 * The TCP connection to the SSH server, its writes gathered per tick: ssh2 writes every packet
 * (at most 32 KiB, the server's limit for a channel) on its own, one system call each; corked
 * until the end of the tick, the packets of one burst leave in one writev.
 */
function corkedSocket(host: string, port: number): Socket {
  const sock = connect({ host, port });
  sock.setNoDelay(true);
  const write = sock.write.bind(sock) as (...a: unknown[]) => boolean;
  let corked = false;
  sock.write = (...args: unknown[]) => {
    if (!corked) {
      corked = true;
      sock.cork();
      process.nextTick(() => {
        corked = false;
        sock.uncork();
      });
    }
    return write(...args);
  };
  return sock;
}
