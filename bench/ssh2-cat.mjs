#!/usr/bin/env node
/**
 * ssh2 half of the ssh throughput benchmark: connect to the lab's sshd with the `ssh2` package
 * (the library ferry uses), exec `cat > /dev/null` and pipe a file into the channel.
 *
 *   node bench/ssh2-cat.mjs <file>
 *
 * Environment: BENCH_SSH_HOST (127.0.0.1), BENCH_SSH_PORT (2222), BENCH_SSH_USER (root),
 * BENCH_SSH_KEY (/var/lib/ferry-lab/ssh/id_ed25519), BENCH_SSH_KNOWN_HOSTS
 * (/var/lib/ferry-lab/ssh/known_hosts), BENCH_SSH_CIPHER (aes128-gcm@openssh.com).
 * On success prints one JSON line on stdout: { bytes, cipher, mac }.
 */
import fs from 'node:fs';
import ssh2 from 'ssh2';

const { Client } = ssh2;
const file = process.argv[2];
if (!file) {
  process.stderr.write('usage: ssh2-cat.mjs <file>\n');
  process.exit(2);
}
const host = process.env.BENCH_SSH_HOST ?? '127.0.0.1';
const port = Number(process.env.BENCH_SSH_PORT ?? 2222);
const username = process.env.BENCH_SSH_USER ?? 'root';
const keyFile = process.env.BENCH_SSH_KEY ?? '/var/lib/ferry-lab/ssh/id_ed25519';
const knownHosts = process.env.BENCH_SSH_KNOWN_HOSTS ?? '/var/lib/ferry-lab/ssh/known_hosts';
const cipher = process.env.BENCH_SSH_CIPHER ?? 'aes128-gcm@openssh.com';

// The host key, from known_hosts (OpenSSH's bracketed form for a non-22 port).
const hostField = port === 22 ? host : `[${host}]:${port}`;
const line = fs
  .readFileSync(knownHosts, 'utf8')
  .split('\n')
  .map((l) => l.trim().split(/\s+/))
  .find((f) => f.length >= 3 && f[0].split(',').includes(hostField));
if (!line) {
  process.stderr.write(`ssh2-cat: no key for ${hostField} in ${knownHosts}\n`);
  process.exit(1);
}
const expectedKey = Buffer.from(line[2], 'base64');

let negotiated = {};
let bytes = 0;
const conn = new Client();
conn.on('handshake', (n) => (negotiated = n));
conn.on('error', (err) => {
  process.stderr.write(`ssh2-cat: ${err.message}\n`);
  process.exit(1);
});
conn.on('ready', () => {
  conn.exec('cat > /dev/null', (err, ch) => {
    if (err) {
      process.stderr.write(`ssh2-cat: exec: ${err.message}\n`);
      process.exit(1);
    }
    let code = null;
    ch.on('exit', (c) => (code = c));
    ch.on('close', () => {
      conn.end();
      if (code !== 0) {
        process.stderr.write(`ssh2-cat: remote command exited with ${code}\n`);
        process.exitCode = 1;
        return;
      }
      process.stdout.write(`${JSON.stringify({ bytes, cipher: negotiated.cs?.cipher, mac: negotiated.cs?.mac })}\n`);
    });
    ch.stderr.on('data', (d) => process.stderr.write(d));
    ch.resume(); // the remote command prints nothing; keep the stream flowing anyway
    const rs = fs.createReadStream(file, { highWaterMark: 1 << 20 });
    rs.on('data', (d) => (bytes += d.length));
    rs.on('error', (e) => {
      process.stderr.write(`ssh2-cat: read ${file}: ${e.message}\n`);
      process.exit(1);
    });
    rs.pipe(ch);
  });
});
conn.connect({
  host,
  port,
  username,
  privateKey: fs.readFileSync(keyFile),
  hostVerifier: (key) => Buffer.compare(key, expectedKey) === 0,
  algorithms: { cipher: [cipher] },
  readyTimeout: 20_000,
});
