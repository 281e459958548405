/**
 * A fake `restic` for unit tests (a ResticRunner): it keeps snapshots in memory, as restic would
 * store them, and answers the few commands ferry runs (version, snapshots, backup, dump) the way
 * restic 0.14 does: `backup` reads the paths it is given relative to its working directory and
 * stores them at `/<path>`; `dump` of a file gives its bytes, of a directory a tar of what is
 * under it (names without a leading slash, the directory itself left out). Every call is kept.
 */
import { createHash } from 'node:crypto';
import { lstat, readFile, readdir, readlink } from 'node:fs/promises';
import path from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import type { ResticCall, ResticRun, ResticRunner } from '../../src/store/restic/runner.js';
import { ResticError } from '../../src/store/restic/runner.js';
import type { ResticSnapshot } from '../../src/store/restic/layout.js';
import { packTar, type TarEntry } from './tar.js';

export interface FakeNode {
  type: 'file' | 'dir' | 'symlink';
  data?: Buffer;
  link?: string;
  mode: number;
  uid: number;
  gid: number;
  mtime: Date;
}

export class FakeRestic implements ResticRunner {
  readonly calls: ResticCall[] = [];
  readonly snapshots: { meta: ResticSnapshot; nodes: Map<string, FakeNode>; cwd: string }[] = [];
  /** Content hashes stored so far: what a backup adds is what was not there yet. */
  private readonly blobs = new Set<string>();
  version = 'restic 0.14.0 compiled with go1.19.8 on linux/amd64';
  /** A command that fails (exit 1), e.g. 'backup'. */
  failOn?: string;
  /** Called at each call (tests put it in the engine's timeline). */
  onCall?: (command: string) => void;
  private seq = 0;

  run(call: ResticCall): ResticRun {
    this.calls.push(call);
    const args = call.args[0] === '-r' ? call.args.slice(2) : call.args;
    const command = args[0]!;
    this.onCall?.(command);
    const out = new PassThrough();
    const done = (async () => {
      if (this.failOn === command) {
        out.end();
        throw new ResticError(command, 1, 'Fatal: fake failure');
      }
      switch (command) {
        case 'version':
          out.end(this.version + '\n');
          return;
        case 'snapshots':
          out.end(JSON.stringify(this.list(args)) + '\n');
          return;
        case 'backup':
          out.end(await this.backup(args, call.cwd!));
          return;
        case 'dump':
          await this.dump(args, out);
          return;
        case 'ls':
          out.end(this.ls(args));
          return;
        case 'check': // the fake's repository is always whole (failOn = 'check' makes it not)
          out.end('no errors were found\n');
          return;
        case 'forget': {
          const ids = args.slice(args.indexOf('--') + 1);
          for (const id of ids) {
            const i = this.snapshots.findIndex((s) => s.meta.id.startsWith(id));
            if (i < 0) throw new ResticError('forget', 1, `no snapshot ${id}`);
            this.snapshots.splice(i, 1);
          }
          out.end();
          return;
        }
        default:
          out.end();
          throw new ResticError(command, 1, `unknown command "${command}"`);
      }
    })();
    done.catch(() => out.destroy());
    return { stdout: out, done, kill: () => out.destroy() };
  }

  private flag(args: string[], name: string): string | undefined {
    const end = args.indexOf('--');
    const i = args.indexOf(name);
    return i >= 0 && (end < 0 || i < end) ? args[i + 1] : undefined;
  }

  private list(args: string[]): ResticSnapshot[] {
    // each --tag is one alternative; within one, every tag (comma-separated) must be there
    const end = args.indexOf('--');
    const groups = args
      .flatMap((a, i) => (a === '--tag' && (end < 0 || i < end) ? [args[i + 1]!.split(',')] : []))
      .filter((g) => g.length);
    const host = this.flag(args, '--host');
    return this.snapshots
      .map((s) => s.meta)
      .filter(
        (s) =>
          (!groups.length || groups.some((g) => g.every((t) => s.tags?.includes(t)))) && (!host || s.hostname === host),
      );
  }

  /** Put a snapshot in as another host's ferry would have made it (no files). */
  addSnapshot(meta: Omit<ResticSnapshot, 'short_id' | 'paths'>): void {
    this.snapshots.push({ meta: { ...meta, short_id: meta.id.slice(0, 8), paths: [] }, nodes: new Map(), cwd: '/' });
  }

  private async backup(args: string[], cwd: string): Promise<string> {
    const paths = args.slice(args.indexOf('--') + 1);
    const nodes = new Map<string, FakeNode>();
    let added = 0;
    let processed = 0;
    const walk = async (rel: string) => {
      const full = path.join(cwd, rel);
      const st = await lstat(full);
      const base = { mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, mtime: st.mtime };
      if (st.isDirectory()) {
        nodes.set('/' + rel, { type: 'dir', ...base });
        for (const n of (await readdir(full)).sort()) await walk(path.posix.join(rel, n));
      } else if (st.isSymbolicLink()) nodes.set('/' + rel, { type: 'symlink', link: await readlink(full), ...base });
      else {
        const data = await readFile(full);
        processed += data.length;
        const h = createHash('sha256').update(data).digest('hex');
        if (!this.blobs.has(h)) {
          this.blobs.add(h);
          added += data.length;
        }
        nodes.set('/' + rel, { type: 'file', data, ...base });
      }
    };
    for (const p of paths) await walk(p);
    const id = createHash('sha256').update(String(++this.seq)).digest('hex');
    const tagFlag = this.flag(args, '--tag');
    this.snapshots.push({
      meta: {
        id,
        short_id: id.slice(0, 8),
        time: new Date(Date.UTC(2026, 0, 1, 0, 0, this.seq)).toISOString(),
        hostname: this.flag(args, '--host')!,
        tags: tagFlag ? tagFlag.split(',') : [],
        paths: paths.map((p) => path.join(cwd, p)),
      },
      nodes,
      cwd,
    });
    return (
      JSON.stringify({ message_type: 'status', percent_done: 1 }) +
      '\n' +
      JSON.stringify({
        message_type: 'summary',
        files_new: nodes.size,
        files_changed: 0,
        files_unmodified: 0,
        data_added: added,
        total_bytes_processed: processed,
        total_duration: 0.1,
        snapshot_id: id.slice(0, 8),
      }) +
      '\n'
    );
  }

  /** `ls --json --recursive <snapshot> <path>`: the snapshot, then the node and every node under it. */
  private ls(args: string[]): string {
    const [snapId, p] = args.slice(-2) as [string, string];
    const snap = this.snapshots.find((s) => s.meta.id.startsWith(snapId));
    if (!snap) throw new ResticError('ls', 1, `no snapshot ${snapId}`);
    const lines = [JSON.stringify({ ...snap.meta, struct_type: 'snapshot' })];
    for (const [name, n] of snap.nodes)
      if (name === p || name.startsWith(p + '/'))
        lines.push(
          JSON.stringify({
            name: path.posix.basename(name),
            type: n.type,
            path: name,
            uid: n.uid,
            gid: n.gid,
            mtime: n.mtime.toISOString(),
            struct_type: 'node',
          }),
        );
    return lines.join('\n') + '\n';
  }

  private async dump(args: string[], out: PassThrough): Promise<void> {
    const [snapId, p] = args.slice(-2) as [string, string];
    const snap = this.snapshots.find((s) => s.meta.id.startsWith(snapId));
    if (!snap) throw new ResticError('dump', 1, `no snapshot ${snapId}`);
    const node = snap.nodes.get(p);
    if (!node) throw new ResticError('dump', 1, `cannot dump file: path "${p}" not found in snapshot`);
    if (node.type === 'file') {
      out.end(node.data);
      return;
    }
    const entries = [...snap.nodes]
      .filter(([k]) => k.startsWith(p + '/'))
      .map(([name, n]): TarEntry => {
        const h = { name: name.slice(1), mode: n.mode, uid: n.uid, gid: n.gid, mtime: n.mtime };
        if (n.type === 'dir') return { ...h, name: h.name + '/', type: 'directory' };
        if (n.type === 'symlink') return { ...h, type: 'symlink', linkname: n.link! };
        return { ...h, data: n.data! };
      });
    Readable.from([await packTar(entries)]).pipe(out);
    await new Promise((res) => out.on('end', res));
  }
}
