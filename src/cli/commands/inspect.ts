import { Command } from 'commander';
import { BundleReader } from '../../bundle/reader.js';
import type { ContainerEntry, Manifest } from '../../bundle/manifest.js';
import { bundleCompression, envName, imageMode, isEncrypted, redactManifest } from '../../store/catalog.js';
import { readTarget } from '../../store/registry.js';
import { isResticLocation } from '../../store/restic/layout.js';
import { resticInspectJson, resticSnapshot } from './restic.js';
import { deviceClaims } from '../../ops/steps/startable.js';
import { setExit, type Deps } from '../program.js';
import { humanBytes } from '../render.js';
import { shortTime, table } from './ls.js';
import { portsFromBindings } from '../json.js';
import { declaredSigner, type Trust } from '../../bundle/trust.js';
import { loadTrust } from '../signing.js';
import { hostAccess } from '../../plan/policy.js';

type Json = Record<string, unknown>;

function portLines(hc: Json): string[] {
  const out: string[] = [];
  const pb = (hc.PortBindings ?? {}) as Record<string, { HostIp?: string; HostPort?: string }[] | null>;
  for (const [port, binds] of Object.entries(pb)) {
    for (const b of binds ?? [{}]) out.push(`${b.HostIp || '0.0.0.0'}:${b.HostPort || '(any)'} -> ${port}`);
  }
  if (hc.PublishAllPorts) out.push('every exposed port, on random host ports (--publish-all)');
  return out;
}

function restartPolicy(hc: Json): string {
  const rp = hc.RestartPolicy as { Name?: string; MaximumRetryCount?: number } | undefined;
  if (!rp?.Name) return 'no';
  return rp.MaximumRetryCount ? `${rp.Name} (at most ${rp.MaximumRetryCount} retries)` : rp.Name;
}

function containerLines(c: ContainerEntry, m: Manifest): string[] {
  const s = c.spec;
  const hc = (s.hostConfig ?? {}) as Json;
  const cfg = (s.config ?? {}) as Json;
  const rows: string[][] = [];
  const add = (k: string, vals: string[]) => {
    if (!vals.length) rows.push([k, '-']);
    vals.forEach((v, i) => rows.push([i === 0 ? k : '', v]));
  };
  add('image', [`${c.image.ref} (member ${c.image.member})`]);
  add('base image', [`${s.baseImage.ref}${s.baseImage.id ? ` (${s.baseImage.id.slice(0, 19)})` : ''}`]);
  // A container ferry restored runs on a snapshot: the image its settings are compared with.
  if (s.origin && s.origin.id !== s.baseImage.id)
    add('origin image', [`${s.origin.ref}${s.origin.id ? ` (${s.origin.id.slice(0, 19)})` : ''}`]);
  add('state', [
    `${s.state.paused ? 'paused' : s.state.running ? 'running' : 'stopped'} (backed up with --consistency ${c.consistency})`,
  ]);
  add('ports', portLines(hc));
  const vols = (s.mounts ?? []).filter((x) => x.type === 'volume');
  add(
    'volumes',
    vols.map((v) => {
      const entry = m.volumes.find((x) => x.name === v.source);
      const name = v.anonymous ? `${(v.source ?? '').slice(0, 12)} (anonymous)` : (v.source ?? '?');
      const without = entry?.excludePaths?.length ? ` (without ${entry.excludePaths.join(', ')})` : '';
      return `${name} -> ${v.destination}${v.readOnly ? ' (read-only)' : ''}${entry ? `, data in ${entry.member}${without}` : ', data not in the bundle'}`;
    }),
  );
  const binds = (s.mounts ?? []).filter((x) => x.type === 'bind');
  add(
    'bind mounts',
    binds.map((b) => {
      const copied = c.binds.find((x) => x.destination === b.destination);
      return `${b.source} -> ${b.destination}${b.readOnly ? ' (read-only)' : ''}${copied ? `, data in ${copied.member}` : ', recorded only'}`;
    }),
  );
  const other = (s.mounts ?? []).filter((x) => x.type !== 'bind' && x.type !== 'volume');
  if (other.length)
    add(
      'other mounts',
      other.map((o) => `${o.type} -> ${o.destination}${o.readOnly ? ' (read-only)' : ''}`),
    );
  const devices = deviceClaims(s).map((d) => `${d.PathOnHost} -> ${d.PathInContainer}`);
  if (Array.isArray(hc.DeviceRequests) && hc.DeviceRequests.length) devices.push('requested through a driver (--gpus)');
  if (devices.length) add('devices', devices);
  const nm = typeof hc.NetworkMode === 'string' ? hc.NetworkMode : '';
  const eps = (s.endpoints ?? []).map((e) => {
    const extra = [
      e.aliases?.length ? `aliases ${e.aliases.join(', ')}` : '',
      e.ipv4Address ? `ip ${e.ipv4Address}` : '',
      e.ipv6Address ? `ipv6 ${e.ipv6Address}` : '',
      e.links?.length ? `links ${e.links.join(', ')}` : '',
    ].filter(Boolean);
    return `${e.network}${extra.length ? ` (${extra.join('; ')})` : ''}`;
  });
  add('networks', eps.length ? eps : nm ? [`network mode ${nm}`] : []);
  add('restart', [restartPolicy(hc)]);
  const env = Array.isArray(cfg.Env) ? (cfg.Env as string[]).map(envName) : [];
  add('env (names)', env.length ? [[...env].sort().join(', ')] : []);
  const labels = (cfg.Labels ?? {}) as Record<string, string>;
  add(
    'labels',
    Object.entries(labels).map(([k, v]) => `${k}=${v}`),
  );
  // What the restore policy refuses unless allowed (--allow) or signed by a trusted key (--trust).
  add(
    'host access',
    hostAccess(s).map((h) => `${h.detail} [${h.kind}]`),
  );
  return table(rows)
    .split('\n')
    .filter(Boolean)
    .map((l) => `  ${l}`);
}

export function inspectText(m: Manifest, location: string, bytes?: number, trust?: Trust): string {
  const out: string[] = [];
  const src = m.source;
  out.push(
    table([
      ['bundle', `${location}${bytes !== undefined ? ` (${humanBytes(bytes)})` : ''}`],
      ['created', `${shortTime(m.createdAt)} (${m.createdAt})`],
      [
        'source',
        `engine ${src.engine} (Docker ${src.serverVersion}, API ${src.apiVersion}, ${src.os}/${src.arch}), ferry ran on host ${src.hostname}`,
      ],
      ['ferry', `${m.ferryVersion}, bundle format ${m.formatVersion}`],
      ['images', imageMode(m)],
      ['compression', bundleCompression(m)],
      ['encrypted', isEncrypted(m) ? 'yes' : 'no'],
      [
        'signed by',
        m.signature
          ? `${declaredSigner(m.signature, trust)!.text} (as the manifest declares; ferry verify checks the signature)`
          : 'no one (unsigned)',
      ],
    ]).trimEnd(),
  );
  for (const c of m.containers) {
    out.push('', `container ${c.spec.name}`, ...containerLines(c, m));
  }
  out.push('', 'networks');
  if (!m.networks.length) out.push("  (none: only the engine's own networks are used)");
  for (const n of m.networks) {
    const subnets = (n.ipam?.Config ?? [])
      .map((x) => x.Subnet)
      .filter(Boolean)
      .join(', ');
    out.push(
      `  ${n.name}: driver ${n.driver}${subnets ? `, subnet ${subnets}` : ''}${n.internal ? ', internal' : ''}${n.enableIPv6 ? ', IPv6' : ''}`,
    );
  }
  out.push('', 'members');
  // What each member may inflate to, as declared before its data (decompression is held to it).
  const declared = (x: Manifest['members'][number]) =>
    x.rawBytes !== undefined
      ? humanBytes(x.rawBytes)
      : m.partRawBytes !== undefined
        ? `parts of ≤ ${humanBytes(m.partRawBytes)}`
        : '-';
  out.push(
    ...table([['NAME', 'KIND', 'CODEC', 'RAW SIZE'], ...m.members.map((x) => [x.name, x.kind, x.codec, declared(x)])])
      .trimEnd()
      .split('\n')
      .map((l) => `  ${l}`),
  );
  return out.join('\n') + '\n';
}

/** `ferry --json inspect` (docs/json.md): a summary in the common names, then the manifest. */
export function inspectJson(
  m: Manifest,
  location: string,
  bytes?: number,
  trust?: Trust,
): { ok: true } & Record<string, unknown> {
  const principals = trust && declaredSigner(m.signature, trust)?.principals;
  return {
    ok: true,
    bundle: location,
    ...(bytes !== undefined ? { fileBytes: bytes } : {}),
    createdAt: m.createdAt,
    containers: m.containers.map((c) => c.spec.name),
    imageMode: imageMode(m),
    compression: bundleCompression(m),
    encrypted: isEncrypted(m),
    ferryVersion: m.ferryVersion,
    formatVersion: m.formatVersion,
    ports: m.containers.flatMap((c) =>
      portsFromBindings((c.spec.hostConfig as Json | undefined)?.PortBindings).map((p) => ({
        container: c.spec.name,
        ...p,
      })),
    ),
    // The key the manifest declares (checked by verify and restore --trust, not here).
    ...(m.signature ? { signer: { ...m.signature, ...(principals ? { principals } : {}) } } : {}),
    // Settings that give a container the host (restore refuses them unless allowed): plan/policy.ts.
    hostAccess: m.containers.flatMap((c) => hostAccess(c.spec)),
    manifest: redactManifest(m),
  };
}

export function inspectCommand(program: Command, deps: Deps): Command {
  return new Command('inspect')
    .description(
      'Show what a bundle holds (its manifest), without reading its data; environment values are never shown',
    )
    .argument('<bundle>', 'a bundle file, - for stdin, or restic:<repo>[#<snapshot id or container>]')
    .option(
      '--trust <allowed_signers>',
      'name the signer by its principals in this allowed_signers file (else FERRY_TRUST)',
    )
    .addHelpText(
      'after',
      `
Only the manifest (the first member) is read: inspect is instant even on a large bundle, and
says nothing about whether the data is whole (use \`ferry verify\` for that). Environment
variables are shown by name only, in both forms; --json prints the manifest with each Env entry
reduced to its name, under "manifest" (docs/json.md).

Examples:
  ferry inspect /backups/ferry-web-20261123T021500Z.tar
  ferry --json inspect web.tar | jq '.ports'`,
    )
    .action(async (bundle: string, flags: { trust?: string }) => {
      const g = program.opts<{ json?: boolean; quiet?: boolean }>();
      deps.setJson(!!g.json);
      const trust = await loadTrust(flags.trust);
      if (isResticLocation(bundle)) {
        // A restic snapshot: its manifest.json, read with restic dump (commands/restic.ts).
        const snap = await resticSnapshot(bundle, deps);
        if (g.json) deps.emit('inspect', resticInspectJson(bundle, snap));
        else deps.io.stdout.write(inspectText(snap.manifest, snap.transport.describe(), undefined, trust));
        setExit(program, 0);
        return;
      }
      const transport = readTarget(bundle, deps.stores);
      try {
        const src = await transport.openBundle();
        const reader = await BundleReader.open(src.stream, src.location, {
          passphrase: await deps.passphrase(),
          identities: await deps.identities(),
        });
        if (reader.encryption) (reader.manifest as unknown as Record<string, unknown>).encrypted = true;
        reader.close();
        if (g.json) deps.emit('inspect', inspectJson(reader.manifest, src.location, src.size, trust));
        else deps.io.stdout.write(inspectText(reader.manifest, src.location, src.size, trust));
      } finally {
        await transport.close();
      }
      setExit(program, 0);
    });
}
