/**
 * --sign-key (backup) and --trust (restore, migrate, drill, verify): read at the edge, from the
 * option or its environment variable (FERRY_SIGN_KEY, FERRY_TRUST), and handed down as a Signer
 * and a Trust.
 */
import { readFile } from 'node:fs/promises';
import type { Signer } from '../bundle/sshsig.js';
import { parseAllowedSigners, type Trust } from '../bundle/trust.js';
import { UsageError } from '../errors.js';
import { signerFor } from '../ssh/sign-key.js';

export const SIGN_KEY_HELP =
  'sign the bundle with this SSH private key file (ed25519, RSA, ECDSA), or agent:SHA256:<fingerprint> for a key in ssh-agent (else FERRY_SIGN_KEY)';
export const TRUST_HELP =
  'accept only bundles signed by a key of this OpenSSH allowed_signers file; anything else is refused before anything is changed (else FERRY_TRUST)';

export const ALLOW_HELP =
  'create settings that give a container the host although the bundle is not signed by a trusted key: privileged, host-binds, host-network, host-pid, host-ipc, devices, capabilities, unconfined, or all (comma-separated, repeatable)';

export async function loadSigner(flag: string | undefined, env = process.env): Promise<Signer | undefined> {
  const spec = flag ?? (env.FERRY_SIGN_KEY || undefined);
  return spec ? signerFor(spec, env) : undefined;
}

export async function loadTrust(flag: string | undefined, env = process.env): Promise<Trust | undefined> {
  const file = flag ?? (env.FERRY_TRUST || undefined);
  if (!file) return undefined;
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new UsageError(
      `--trust ${file}: cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`,
      'name an allowed_signers file: one `principal ssh-ed25519 AAAA...` line per signing host',
    );
  }
  const trust = parseAllowedSigners(text, file);
  if (!trust.signers.length)
    throw new UsageError(
      `--trust ${file} allows no key`,
      [...trust.notes, 'add a `principal ssh-ed25519 AAAA...` line per signing host'].join('; '),
    );
  return trust;
}
