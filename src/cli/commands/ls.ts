import { Command } from 'commander';
import { Catalog, catalogJson, type CatalogEntry } from '../../store/catalog.js';
import { readDamaged, type DamageMark } from '../../store/marks.js';
import { openStore } from '../../store/registry.js';
import { isResticLocation } from '../../store/restic/layout.js';
import { lsRestic } from './restic.js';
import { setExit, type Deps } from '../program.js';
import { humanBytes } from '../render.js';
import path from 'node:path';
import { declaredSigner, type Trust } from '../../bundle/trust.js';
import { loadTrust } from '../signing.js';
import { readTarget } from '../../store/registry.js';
import { listFiles, type FileEntry } from '../../ops/files.js';
import { UsageError } from '../../errors.js';

/** Left-aligned columns, two spaces apart; the last column is not padded. */
export function table(rows: string[][]): string {
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  return rows
    .map(
      (r) =>
        r
          .map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!)))
          .join('  ')
          .trimEnd() + '\n',
    )
    .join('');
}

/** 2026-11-23T09:31:52.745Z -> 2026-11-23 09:31:52Z */
export function shortTime(iso: string | undefined): string {
  if (!iso) return '-';
  return iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

export const UNREADABLE_MARK = '!! unreadable';
export const DAMAGED_MARK = '!! damaged';

/** The SIGNED BY column: the principals --trust gives the declared key, else its fingerprint. */
function signedBy(e: CatalogEntry, trust?: Trust): string {
  const d = declaredSigner(e.signer, trust);
  if (!d) return e.imageMode === '?' ? '?' : '-';
  return d.principals?.length ? d.principals.join(',') : d.text;
}

export function lsTable(
  entries: CatalogEntry[],
  trust?: Trust,
  marks: ReadonlyMap<string, DamageMark> = new Map(),
): string {
  const rows = [['CREATED (UTC)', 'CONTAINERS', 'SIZE', 'IMAGES', 'COMPRESSION', 'ENCRYPTED', 'SIGNED BY', 'BUNDLE']];
  for (const e of entries) {
    const name = path.basename(e.bundle);
    if (e.error)
      rows.push([
        '-',
        '-',
        humanBytes(e.bytes),
        '-',
        '-',
        e.encrypted ? 'yes' : '-',
        '-',
        `${name}  ${UNREADABLE_MARK}: ${e.error}`,
      ]);
    else
      rows.push([
        shortTime(e.created),
        e.containers!.join(','),
        humanBytes(e.bytes),
        e.imageMode!,
        e.compression!,
        e.encrypted ? 'yes' : 'no',
        signedBy(e, trust),
        marks.has(e.bundle)
          ? `${name}  ${DAMAGED_MARK} (verify, ${shortTime(marks.get(e.bundle)!.at)}; --json has why)`
          : name,
      ]);
  }
  return table(rows);
}

/** drwxr-xr-x, as ls -l and tar -tv show a mode. Pure. */
export function modeString(type: FileEntry['type'], mode: number): string {
  const t = { directory: 'd', symlink: 'l', link: 'h', fifo: 'p', 'character-device': 'c', 'block-device': 'b' }[
    type as string
  ];
  const bits = ['r', 'w', 'x', 'r', 'w', 'x', 'r', 'w', 'x'].map((c, i) => (mode & (1 << (8 - i)) ? c : '-'));
  if (mode & 0o4000) bits[2] = bits[2] === 'x' ? 's' : 'S';
  if (mode & 0o2000) bits[5] = bits[5] === 'x' ? 's' : 'S';
  if (mode & 0o1000) bits[8] = bits[8] === 'x' ? 't' : 'T';
  return (t ?? '-') + bits.join('');
}

/** One line of `ls --files` (fixed columns: the listing is printed as it is read). Pure. */
export function fileLine(e: FileEntry): string {
  const link = e.type === 'symlink' ? ` -> ${e.linkname}` : e.type === 'link' ? ` link to ${e.linkname}` : '';
  return `${modeString(e.type, e.mode)}  ${`${e.uid}/${e.gid}`.padEnd(11)} ${String(e.size).padStart(12)}  ${shortTime(e.mtime.toISOString())}  ${e.name}:${e.path}${link}\n`;
}

export function fileJson(e: FileEntry) {
  return {
    source: e.source,
    name: e.name,
    path: e.path,
    type: e.type,
    size: e.size,
    mode: e.mode.toString(8).padStart(4, '0'),
    uid: e.uid,
    gid: e.gid,
    mtime: e.mtime.toISOString(),
    ...(e.linkname !== undefined ? { linkname: e.linkname } : {}),
    ...(e.sparse ? { sparse: true } : {}),
  };
}

/** Write and wait while the stream is full (a listing of millions of files stays flat in memory). */
async function put(out: NodeJS.WritableStream, text: string): Promise<void> {
  if (!out.write(text)) await new Promise((r) => out.once('drain', r));
}

async function lsFiles(bundle: string, flags: { volume?: string; trust?: string }, json: boolean, deps: Deps) {
  const trust = await loadTrust(flags.trust);
  const transport = readTarget(bundle, deps.stores);
  const files: ReturnType<typeof fileJson>[] = [];
  const out = deps.io.stdout;
  try {
    const res = await listFiles(
      transport,
      { passphrase: await deps.passphrase(), signal: deps.signal, ...(trust ? { trust } : {}) },
      (e) => (json ? void files.push(fileJson(e)) : put(out, fileLine(e))),
      flags.volume ? { volume: flags.volume } : {},
    );
    if (json) deps.emit('ls', { ok: true, bundle: res.location, files });
  } finally {
    await transport.close().catch(() => {});
  }
}

export function lsCommand(program: Command, deps: Deps): Command {
  return new Command('ls')
    .description(
      'List the bundles in a store (a directory), from their manifests alone; with --files, the files in a bundle',
    )
    .argument(
      '<store>',
      'a directory that backups are written to, ssh://[user@]host[:port]/dir, s3://bucket/prefix, or restic:<repo>; with --files, a bundle',
    )
    .option('--files', "list the files in the bundle's volumes and bind mounts (path, size, mode, owner, mtime)")
    .option('--volume <name>', 'with --files: only this volume')
    .option(
      '--trust <allowed_signers>',
      'name each signer by its principals in this allowed_signers file (else FERRY_TRUST)',
    )
    .addHelpText(
      'after',
      `
Unreadable files are listed with "${UNREADABLE_MARK}" (--json: an "error" object); they never stop the listing.
Bundles that ferry verify found damaged are listed with "${DAMAGED_MARK}" (--json: "damaged").
SIGNED BY is the key a bundle's manifest declares (ls reads only manifests: the signature itself
is checked by ferry verify and restore --trust).

Examples:
  ferry ls /backups
  ferry --json ls /backups | jq -r '.bundles[-1].bundle'     # the newest bundle
  ferry ls /backups/ferry-web-20261123T021500Z.tar --files --volume web-data
  ferry --json ls s3://backups/ferry/web.tar --files | jq -r '.files[] | select(.size > 1e9) | .path'

With --files, the bundle is read once, start to end (decrypted and decompressed as it passes,
nothing kept): each line is printed as it is read, and the run fails (exit 7) if the bundle
turns out damaged. Paths are from the volume's root; a bind mount is named <container>:<path>.`,
    )
    .action(async (store: string, flags: { trust?: string; files?: boolean; volume?: string }) => {
      const g = program.opts<{ json?: boolean; quiet?: boolean }>();
      deps.setJson(!!g.json);
      if (flags.volume && !flags.files)
        throw new UsageError('--volume goes with --files', 'ferry ls <bundle> --files --volume <name>');
      if (flags.files) {
        if (isResticLocation(store))
          throw new UsageError(
            'ls --files reads a bundle file; a restic snapshot keeps its files in restic',
            'restic ls <snapshot>',
          );
        await lsFiles(store, flags, !!g.json, deps);
        setExit(program, 0);
        return;
      }
      if (isResticLocation(store)) {
        await lsRestic(store, !!g.json, deps); // ferry's snapshots, by host and container set
        setExit(program, 0);
        return;
      }
      const trust = await loadTrust(flags.trust);
      const st = openStore(store, deps.stores);
      const entries = await new Catalog(st, await deps.passphrase(), await deps.identities()).list();
      // The damage marks verify left (store/marks.ts): one look each, next to the manifest read.
      const marks = new Map<string, DamageMark>();
      for (const e of entries) {
        if (e.error) continue;
        const m = await readDamaged(st, e.name).catch(() => undefined);
        if (m) marks.set(e.bundle, m);
      }
      if (g.json)
        deps.emit('ls', {
          ok: true,
          store: st.describe(),
          bundles: entries.map((e) => {
            const m = marks.get(e.bundle);
            const j = { ...catalogJson(e), ...(m ? { damaged: { at: m.at, reason: m.reason } } : {}) };
            const p = trust && declaredSigner(e.signer, trust)?.principals;
            return p && e.signer ? { ...j, signer: { ...e.signer, principals: p } } : j;
          }),
        });
      else if (entries.length === 0) deps.io.stdout.write(`no bundles in ${st.describe()}\n`);
      else deps.io.stdout.write(lsTable(entries, trust, marks));
      setExit(program, 0);
    });
}
