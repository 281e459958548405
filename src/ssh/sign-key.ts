/**
 * Keys that sign bundles (bundle/sshsig.ts): an SSH private key file (OpenSSH or PEM format, read
 * by ssh2's key parser), or a key held by ssh-agent, chosen by its fingerprint (ssh2's agent
 * client asks the agent to sign; the private key never leaves it).
 */
import { readFile } from 'node:fs/promises';
import { createPrivateKey } from 'node:crypto';
import { UsageError } from '../errors.js';
import { fingerprint, publicKeyLine, sshSignature, sshString, WireReader, type Signer } from '../bundle/sshsig.js';
import { loadSsh2 } from './ssh2.js';
import type { ParsedKey } from 'ssh2';

const SUPPORTED = /^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521))$/;

/** A signer from a private key file; `passphrase` for an encrypted one. */
export async function keyFileSigner(path: string, passphrase?: string): Promise<Signer> {
  let text: Buffer;
  try {
    text = await readFile(path);
  } catch (err) {
    throw new UsageError(`--sign-key ${path}: ${(err as Error).message}`, 'name a readable SSH private key file');
  }
  const parsed = loadSsh2().utils.parseKey(text, passphrase) as ParsedKey | ParsedKey[] | Error;
  const key: ParsedKey | Error | undefined = Array.isArray(parsed) ? parsed[0] : parsed;
  if (!key || key instanceof Error) {
    const msg = key instanceof Error ? key.message : 'no key in it';
    const encrypted = /encrypted|passphrase/i.test(msg);
    throw new UsageError(
      `--sign-key ${path}: cannot read the key (${msg})`,
      encrypted
        ? 'give its passphrase in FERRY_SIGN_KEY_PASSPHRASE, or load it into ssh-agent and use --sign-key agent:<fingerprint>'
        : 'use an OpenSSH private key (ssh-keygen -t ed25519)',
    );
  }
  if (!key.isPrivateKey()) throw new UsageError(`--sign-key ${path} is a public key; name the private key file`);
  if (!SUPPORTED.test(key.type))
    throw new UsageError(`--sign-key ${path}: ${key.type} keys are not supported`, 'use ed25519, RSA or ECDSA');
  const priv = createPrivateKey(key.getPrivatePEM());
  const type = key.type;
  return {
    publicKey: key.getPublicSSH(),
    source: path,
    sign: (data) => Promise.resolve(sshSignature(type, priv, data)),
  };
}

/** A signer for the agent's key with this fingerprint (`SHA256:...`), through $SSH_AUTH_SOCK. */
export async function agentSigner(wanted: string, socket = process.env.SSH_AUTH_SOCK): Promise<Signer> {
  if (!socket)
    throw new UsageError(
      `--sign-key agent:${wanted}: SSH_AUTH_SOCK is not set`,
      'start ssh-agent and ssh-add the key, or name a key file',
    );
  const { OpenSSHAgent } = loadSsh2();
  const agent = new OpenSSHAgent(socket);
  const keys = await new Promise<ParsedKey[]>((resolve, reject) =>
    agent.getIdentities((err, ks) =>
      err ? reject(err) : resolve((ks ?? []).filter((k): k is ParsedKey => 'getPublicSSH' in k)),
    ),
  ).catch((err: Error) => {
    throw new UsageError(`--sign-key agent:${wanted}: cannot ask ssh-agent for its keys (${err.message})`);
  });
  const want = wanted.replace(/=+$/, '');
  const key = keys.find((k) => fingerprint(k.getPublicSSH()) === want);
  if (!key)
    throw new UsageError(
      `--sign-key agent:${wanted}: ssh-agent has no key with that fingerprint`,
      `it has: ${keys.map((k) => fingerprint(k.getPublicSSH())).join(', ') || 'no keys'} (ssh-add -l)`,
    );
  const blob = key.getPublicSSH();
  const type = new WireReader(blob).text();
  if (!SUPPORTED.test(type)) throw new UsageError(`--sign-key agent:${wanted}: ${type} keys are not supported`);
  const algorithm = type === 'ssh-rsa' ? 'rsa-sha2-512' : type;
  return {
    publicKey: blob,
    source: `ssh-agent (${publicKeyLine(blob).slice(0, 24)}…)`,
    sign: (data) =>
      new Promise((resolve, reject) =>
        agent.sign(key, data, { hash: 'sha512' }, (err, sig) =>
          err || !sig
            ? reject(new UsageError(`ssh-agent refused to sign with ${wanted}: ${err?.message ?? 'no signature'}`))
            : resolve(Buffer.concat([sshString(algorithm), sshString(sig)])),
        ),
      ),
  };
}

/** `--sign-key` / FERRY_SIGN_KEY: `agent:SHA256:...` for the agent's key, else a key file path. */
export function signerFor(spec: string, env: NodeJS.ProcessEnv = process.env): Promise<Signer> {
  if (spec.startsWith('agent:')) return agentSigner(spec.slice('agent:'.length), env.SSH_AUTH_SOCK);
  return keyFileSigner(spec, env.FERRY_SIGN_KEY_PASSPHRASE);
}
