import crypto from 'node:crypto';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadSsh2, pooledRandomFill } from '../../src/ssh/ssh2.js';

/**
 * The guard of the patch in src/ssh/ssh2.ts: ssh2 must take crypto.randomFillSync once, when its
 * protocol/crypto.js loads, and call that for every packet's padding. If ssh2 changes (looks the
 * function up at each call, draws padding elsewhere, or loads crypto.js lazily), the pool would be
 * silently unused: these tests fail instead.
 */
const require = createRequire(import.meta.url);
const ssh2Lib = path.dirname(require.resolve('ssh2')); // node_modules/ssh2/lib
const cryptoJs = path.join(ssh2Lib, 'protocol', 'crypto.js');

type Cipher = { allocPacket(payloadLen: number): Buffer; free(): void };
type Ssh2Crypto = {
  CIPHER_INFO: Record<string, { keyLen: number; ivLen: number }>;
  NullCipher: new (seqno: number, onWrite: () => void) => Cipher;
  createCipher(config: unknown): Cipher;
};

/** Sizes asked of crypto.randomFillSync while `fn` runs. */
function randomFillCalls(fn: () => void): number[] {
  const real = crypto.randomFillSync;
  const calls: number[] = [];
  (crypto as { randomFillSync: unknown }).randomFillSync = (buf: Buffer, offset = 0, size?: number) => {
    calls.push(size ?? buf.byteLength - offset);
    return real(buf, offset, size);
  };
  try {
    fn();
  } finally {
    (crypto as { randomFillSync: unknown }).randomFillSync = real;
  }
  return calls;
}

/** Use up the pool exactly, so that the next pooled fill of any size refills it (one 64 KiB call). */
function drainPool() {
  const QUARTER = 16 * 1024; // the largest size the pool serves
  let refilled = false;
  for (let i = 0; i < 5 && !refilled; i++)
    refilled = randomFillCalls(() => pooledRandomFill(Buffer.alloc(QUARTER))).includes(64 * 1024);
  expect(refilled).toBe(true); // now exactly a quarter of a fresh pool is used
  for (let i = 0; i < 3; i++) expect(randomFillCalls(() => pooledRandomFill(Buffer.alloc(QUARTER)))).toEqual([]);
}

describe('what the ssh2 patch relies on', () => {
  it("ssh2's protocol/crypto.js takes randomFillSync from 'crypto' once, at load, and pads packets with it", () => {
    const src = fs.readFileSync(cryptoJs, 'utf8');
    expect(src).toMatch(/const\s*\{[^}]*\brandomFillSync\b[^}]*\}\s*=\s*require\(\s*['"](node:)?crypto['"]\s*\)/);
    expect(src).toMatch(/randomFillSync\(packet, 5 \+ payloadLen, padLen\)/);
  });

  it('padding drawn by ssh2 after loadSsh2() comes from the pool, not from a call per packet', () => {
    expect(require.cache[cryptoJs]).toBeUndefined(); // loaded by loadSsh2, not before it
    loadSsh2();
    const sshCrypto = require.cache[cryptoJs]?.exports as Ssh2Crypto | undefined;
    expect(sshCrypto, 'ssh2 loads protocol/crypto.js when it loads').toBeDefined();
    const info = sshCrypto!.CIPHER_INFO['aes128-gcm@openssh.com']!;
    const ciphers: Cipher[] = [
      new sshCrypto!.NullCipher(0, () => {}),
      sshCrypto!.createCipher({
        outbound: {
          onWrite: () => {},
          cipherInfo: info,
          cipherKey: Buffer.alloc(info.keyLen),
          cipherIV: Buffer.alloc(info.ivLen),
          seqno: 0,
        },
      }),
    ];
    for (const c of ciphers) {
      // With the pool used up, a pooled padding refills it: one 64 KiB call. Padding taken from
      // crypto.randomFillSync at each call would show as a call of its own size (4 to 255 bytes);
      // a function captured before the patch, as none at all.
      drainPool();
      const calls = randomFillCalls(() => {
        for (let i = 0; i < 100; i++) c.allocPacket(1000 + i);
      });
      expect(calls).toEqual([64 * 1024]);
      c.free();
    }
  });
});
