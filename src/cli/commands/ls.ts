import { Command } from 'commander';
import { Catalog, catalogJson, type CatalogEntry } from '../../store/catalog.js';
import { openStore } from '../../store/registry.js';
import { isResticLocation } from '../../store/restic/layout.js';
import { lsRestic } from './restic.js';
import { setExit, type Deps } from '../program.js';
import { humanBytes } from '../render.js';
import path from 'node:path';
import { declaredSigner, type Trust } from '../../bundle/trust.js';
import { loadTrust } from '../signing.js';

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

/** The SIGNED BY column: the principals --trust gives the declared key, else its fingerprint. */
function signedBy(e: CatalogEntry, trust?: Trust): string {
  const d = declaredSigner(e.signer, trust);
  if (!d) return e.imageMode === '?' ? '?' : '-';
  return d.principals?.length ? d.principals.join(',') : d.text;
}

export function lsTable(entries: CatalogEntry[], trust?: Trust): string {
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
        name,
      ]);
  }
  return table(rows);
}

export function lsCommand(program: Command, deps: Deps): Command {
  return new Command('ls')
    .description('List the bundles in a store (a directory), from their manifests alone')
    .argument('<store>', 'a directory that backups are written to, ssh://[user@]host[:port]/dir, or restic:<repo>')
    .option(
      '--trust <allowed_signers>',
      'name each signer by its principals in this allowed_signers file (else FERRY_TRUST)',
    )
    .addHelpText(
      'after',
      `
Unreadable files are listed with "${UNREADABLE_MARK}" (--json: an "error" object); they never stop the listing.
SIGNED BY is the key a bundle's manifest declares (ls reads only manifests: the signature itself
is checked by ferry verify and restore --trust).

Examples:
  ferry ls /backups
  ferry --json ls /backups | jq -r '.bundles[-1].bundle'     # the newest bundle`,
    )
    .action(async (store: string, flags: { trust?: string }) => {
      const g = program.opts<{ json?: boolean; quiet?: boolean }>();
      deps.setJson(!!g.json);
      if (isResticLocation(store)) {
        await lsRestic(store, !!g.json, deps); // ferry's snapshots, by host and container set
        setExit(program, 0);
        return;
      }
      const trust = await loadTrust(flags.trust);
      const st = openStore(store, deps.stores);
      const entries = await new Catalog(st, await deps.passphrase(), await deps.identities()).list();
      if (g.json)
        deps.emit('ls', {
          ok: true,
          store: st.describe(),
          bundles: entries.map((e) => {
            const j = catalogJson(e);
            const p = trust && declaredSigner(e.signer, trust)?.principals;
            return p && e.signer ? { ...j, signer: { ...e.signer, principals: p } } : j;
          }),
        });
      else if (entries.length === 0) deps.io.stdout.write(`no bundles in ${st.describe()}\n`);
      else deps.io.stdout.write(lsTable(entries, trust));
      setExit(program, 0);
    });
}
