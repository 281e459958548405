import { Command } from 'commander';
import { BundleError } from '../../errors.js';
import { badMembers, verifyStream, type VerifyReport } from '../../pipeline/verify.js';
import { resolveTransport } from '../../transport/resolve.js';
import { setExit, type Deps } from '../program.js';
import { createProgress, humanBytes } from '../render.js';

/** One line per member: ok, or BAD with each problem. */
export function verifyText(r: VerifyReport): string {
  const lines: string[] = [];
  for (const m of r.members) {
    const what = [m.kind === 'bundle' ? '' : m.kind, m.codec ?? '', m.bytes !== undefined ? humanBytes(m.bytes) : ''].filter(Boolean).join(', ');
    if (m.ok) lines.push(`ok   ${m.name}${what ? `  (${what})` : ''}`);
    else for (const p of m.problems) lines.push(`BAD  ${m.name}: ${p}`);
  }
  const bad = badMembers(r);
  lines.push(bad.length ? `${r.bundle}: ${bad.length} of ${r.members.length} members are bad` : `${r.bundle}: whole (${r.members.length} member${r.members.length === 1 ? '' : 's'} checked)`);
  return lines.join('\n') + '\n';
}

export function verifyFailure(r: VerifyReport, prefix = ''): BundleError {
  const bad = badMembers(r);
  return new BundleError(`${prefix}${r.bundle} is not whole: bad member${bad.length === 1 ? '' : 's'} ${bad.join(', ')}`, {
    member: bad[0],
    hint: 'do not rely on this bundle; take a new backup (and check the disk it is stored on)',
  });
}

export function verifyCommand(program: Command, deps: Deps): Command {
  return new Command('verify')
    .description('Read a whole bundle and check every member: checksums, sizes, image archives, volume archives')
    .argument('<bundle>', 'a bundle file, or - for stdin')
    .addHelpText('after', `
Exit status 0 only when the bundle is whole; 7 otherwise, with each bad member named.

Examples:
  ferry verify /backups/ferry-web-20261123T021500Z.tar
  ssh host 'cat web.tar' | ferry verify -`)
    .action(async (bundle: string) => {
      const g = program.opts<{ json?: boolean; quiet?: boolean }>();
      deps.setJson(!!g.json);
      const progress = createProgress({ quiet: !!g.quiet });
      const transport = resolveTransport(bundle, { ssh: deps.ssh });
      let report: VerifyReport;
      try {
        const src = await transport.openBundle();
        report = await verifyStream(src.stream, src.location, { progress, signal: deps.signal, passphrase: await deps.passphrase() });
      } finally {
        progress.done();
        await transport.close();
      }
      if (g.json) {
        deps.io.stdout.write(JSON.stringify({ ok: report.ok, bundle: report.bundle, members: report.members }) + '\n');
        if (!report.ok) {
          deps.io.stderr.write(`ferry: error: ${verifyFailure(report).message}\n`);
          setExit(program, verifyFailure(report).exitCode);
          return;
        }
      } else if (!g.quiet || !report.ok) {
        deps.io.stdout.write(verifyText(report));
      }
      if (!report.ok) throw verifyFailure(report);
      setExit(program, 0);
    });
}
