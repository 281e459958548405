#!/usr/bin/env node
/**
 * ferry benchmark: ferry against the docker CLI doing the same job, in the same run, alternating.
 * Scenario s3 compares ferry with itself and with the AWS SDK instead: backup to and restore from
 * the lab's S3 server (Ceph RGW, started by .ci/lab.sh; keys from $LAB/s3/s3.env) against the
 * same to and from a local directory and file, and ferry's upload against the SDK's own multipart
 * uploader (bench/s3-upload.mjs, @aws-sdk/lib-storage) sending the same bundle's bytes.
 *
 *   npm run bench                         # build, then every scenario, 5 runs each, 1 GiB volume
 *   npm run bench -- --quick              # smoke test: 1 run, 256 MiB
 *   node bench/bench.mjs --runs 5 --size 4096 --scenarios backup,migrate
 *
 * Options (argv wins over the environment):
 *   --runs N          runs per scenario                      BENCH_RUNS       (default 5; 1 with --quick)
 *   --size MIB        MiB of random data in the volume       BENCH_SIZE_MIB   (default 1024; 256 with --quick)
 *   --scenarios LIST  comma-separated: backup, migrate, migrate2, compress, ssh, precopy, s3 (or 1-7;
 *                     default all)
 *                                                            BENCH_SCENARIOS
 *   --quick           1 run, 256 MiB, and data checks (sha256) after each migration   BENCH_QUICK=1
 *   --verify          the sha256 data checks without --quick                           BENCH_VERIFY=1
 *   --image FLAVOR    full (default): the workload runs ferry-test/postgres:15-full, built as the
 *                     official postgres:15 image is (LLVM JIT, en_US.UTF-8; 421 MB), the kind of
 *                     image issue 5's figures were taken on (525 MB); slim: the tests' trimmed
 *                     ferry-test/postgres:15 (192 MB), under which the volume weighs more  BENCH_IMAGE
 *   --retries N       retry a failed measurement up to N times (default 2; failures are reported)
 *                                                                                      BENCH_RETRIES
 *   --engine KIND     the source engine: docker20 (default: engine A, Docker 20.10, overlay2) or
 *                     containerd (engine C, Docker 26 with the containerd image store); migrations
 *                     go to engine B over SSH either way                            BENCH_ENGINE
 *   --clean           also remove the cached workload (container and volume on engine A) at the end
 *                                                                                      BENCH_CLEAN=1
 *   --help
 *
 * Needs root on the lab machine: it runs `.ci/lab.sh` (engines A and B, sshd on 127.0.0.1:2222) and
 * `test/fixtures/build-postgres-image.sh` itself, then builds the workload offline on engine A:
 * container `ferry-bench-pg` (ferry-test/postgres:15-full, or :15 with --image slim) with volume `ferry-bench-data` at the data
 * directory holding the cluster, a small table and a file of N MiB of random data, and one changed
 * file in the container's writable layer (/etc/issue). The workload is kept between runs (rebuilt
 * only when missing or of another size).
 *
 * Results: a Markdown table on stdout, and bench/out/results.md + bench/out/results.json
 * (results-containerd.* with --engine containerd).
 * Exit code: 0 when every measurement ran (whatever the ratios; retried failures are listed in
 * the report), 1 when one could not be done, 130 when interrupted. Everything it made on both
 * engines is removed at the end, except the workload; s3 removes what it put in the bucket (under
 * ferry-bench/<time>-<pid>) and checks that no object and no multipart upload is left there.
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';

// ------------------------------------------------------------------------------- constants ---
const ROOT = path.resolve(import.meta.dirname, '..');
const BIN = path.join(ROOT, 'bin', 'ferry.js');
const OUT = path.join(ROOT, 'bench', 'out');
const LAB = process.env.LAB ?? '/var/lib/ferry-lab';
const WORK = process.env.BENCH_WORK_DIR ?? '/var/tmp/ferry-bench';
const ENGINES = { docker20: 'unix:///var/run/docker.sock', containerd: 'unix:///var/run/docker-c.sock' };
/** The source engine (--engine); named A throughout, as in the lab, whatever its kind. */
let ENGINE_A = ENGINES.docker20;
const ENGINE_B = 'unix:///var/run/docker-b.sock';
const PG_IMAGES = { full: 'ferry-test/postgres:15-full', slim: 'ferry-test/postgres:15' };
/** The workload's image (--image); set once the options are read. */
let PG = PG_IMAGES.full;
let PG_FLAVOR = 'full';
const BUSYBOX = 'ferry-test/busybox:1';
const CTR = 'ferry-bench-pg';
const VOL = 'ferry-bench-data';
const PGDATA = '/var/lib/postgresql/data';
const RANDOM_FILE = `${PGDATA}/bench-random.bin`;
const MARKER = 'ferry-bench: changed in the writable layer';
const SNAP = 'bench-snap:1';
const HOLDER = 'bench-holder';
const FERRY_REPO = 'ferry/ferry-bench-pg'; // ferry's snapshot tags: ferry/<container>:<time>
const TABLE_ROWS = 100_000;
const RSS_TARGET_MB = 150;
/** Issue 23's bound on ferry's peak RSS while it writes to or reads from S3. */
const S3_RSS_TARGET_MB = 200;
const MiB = 1024 * 1024;

const SCENARIOS = ['backup', 'migrate', 'migrate2', 'compress', 'ssh', 'precopy', 's3'];
const TITLES = {
  backup: '1. backup `--compress none` vs commit + save + cp',
  migrate: '2. migrate to an empty target vs manual pipeline',
  migrate2: '3. second migrate (target has base image) vs manual pipeline',
  compress: '4. compression of the volume tar',
  ssh: '5. ssh throughput: ssh2 (aes128-gcm) vs OpenSSH',
  precopy: '6. migrate --stop-source under a write load: downtime with the pre-copy vs one pass (--no-precopy)',
  'precopy-copy': '6b. migrate (a copy: the source paused) under a write load: pause with the pre-copy vs one pass (--no-precopy)',
  'precopy-backup': '6c. backup under a write load: pause with --precopy vs without',
  s3: '7. S3 (the lab\'s Ceph RGW): backup to and restore from S3 vs a local directory and file; upload vs the SDK\'s own',
};
const TARGETS = { backup: 0.9, migrate: 0.8, migrate2: 0.35, ssh: 1.5 };

// ----------------------------------------------------------------------------------- options ---
function parseOptions(argv) {
  const env = process.env;
  const truthy = (v) => v !== undefined && v !== '' && v !== '0' && v !== 'false';
  const o = {
    quick: truthy(env.BENCH_QUICK),
    clean: truthy(env.BENCH_CLEAN),
    verify: truthy(env.BENCH_VERIFY),
    runs: env.BENCH_RUNS,
    size: env.BENCH_SIZE_MIB,
    scenarios: env.BENCH_SCENARIOS,
    retries: env.BENCH_RETRIES,
    image: env.BENCH_IMAGE,
    engine: env.BENCH_ENGINE,
  };
  const positional = [];
  for (let i = 0; i < argv.length; i++) {
    let a = argv[i];
    let val;
    const eq = a.indexOf('=');
    if (a.startsWith('--') && eq > 0) [a, val] = [a.slice(0, eq), a.slice(eq + 1)];
    const next = () => {
      if (val !== undefined) return val;
      if (i + 1 >= argv.length) usage(`${a} needs a value`);
      return argv[++i];
    };
    switch (a) {
      case '--quick': o.quick = true; break;
      case '--clean': o.clean = true; break;
      case '--verify': o.verify = true; break;
      case '--retries': o.retries = next(); break;
      case '--image': o.image = next(); break;
      case '--engine': o.engine = next(); break;
      case '--runs': case '-n': o.runs = next(); break;
      case '--size': case '--size-mib': o.size = next(); break;
      case '--scenarios': case '--scenario': case '--only': o.scenarios = next(); break;
      case '--help': case '-h': usage(); break;
      default:
        if (a.startsWith('-')) usage(`unknown option ${a}`);
        positional.push(a); // scenario names may also be given bare: `bench.mjs backup ssh`
    }
  }
  if (positional.length) o.scenarios = positional.join(',');
  const int = (v, name, dflt, min = 1) => {
    if (v === undefined || v === '') return dflt;
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) usage(`${name} must be an integer ≥ ${min} (got ${v})`);
    return n;
  };
  const runs = int(o.runs, '--runs', o.quick ? 1 : 5);
  const sizeMiB = int(o.size, '--size', o.quick ? 256 : 1024);
  let scenarios = SCENARIOS;
  if (o.scenarios && o.scenarios !== 'all') {
    scenarios = [];
    for (const s of String(o.scenarios).split(',').map((x) => x.trim()).filter(Boolean)) {
      const name = /^[1-9]$/.test(s) && Number(s) <= SCENARIOS.length ? SCENARIOS[Number(s) - 1] : s;
      if (!SCENARIOS.includes(name)) usage(`unknown scenario ${s} (choose from ${SCENARIOS.join(', ')} or 1-${SCENARIOS.length})`);
      if (!scenarios.includes(name)) scenarios.push(name);
    }
    scenarios = SCENARIOS.filter((s) => scenarios.includes(s)); // always in the documented order
  }
  const retries = int(o.retries, '--retries', 2, 0);
  const image = o.image || 'full';
  if (!(image in PG_IMAGES)) usage(`--image must be full or slim (got ${image})`);
  const engine = o.engine || 'docker20';
  if (!(engine in ENGINES)) usage(`--engine must be docker20 or containerd (got ${engine})`);
  return { quick: o.quick, clean: o.clean, verify: o.quick || o.verify, runs, sizeMiB, scenarios, retries, image, engine };
}

function usage(err) {
  const lines = fs.readFileSync(new URL(import.meta.url), 'utf8').split('\n');
  const text = lines.slice(2, lines.indexOf(' */')).map((l) => l.replace(/^ \* ?/, '')).join('\n');
  if (err) {
    process.stderr.write(`bench: ${err}\n\n${text}\n`);
    process.exit(2);
  }
  process.stdout.write(`${text}\n`);
  process.exit(0);
}

// ----------------------------------------------------------------------------------- helpers ---
const log = (msg) => process.stderr.write(`bench: ${msg}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The environment every child gets: engine A as the local engine, nothing inherited that would redirect it. */
function childEnv(extra = {}) {
  const env = { ...process.env };
  delete env.DOCKER_CONTEXT;
  delete env.DOCKER_TLS_VERIFY;
  delete env.DOCKER_CERT_PATH;
  env.DOCKER_HOST = ENGINE_A;
  return { ...env, ...extra };
}

/** Run a command to completion (untimed); throws on a non-zero exit unless allowFail. */
function run(cmd, args, { env, input, allowFail = false, inherit = false } = {}) {
  const r = spawnSync(cmd, args, {
    env: env ?? childEnv(),
    input,
    encoding: 'utf8',
    maxBuffer: 64 * MiB,
    stdio: inherit ? ['ignore', 'inherit', 'inherit'] : ['pipe', 'pipe', 'pipe'],
  });
  if (r.error) throw new Error(`${cmd}: ${r.error.message}`);
  const res = { code: r.status ?? -1, stdout: (r.stdout ?? '').trim(), stderr: (r.stderr ?? '').trim() };
  if (res.code !== 0 && !allowFail) throw new Error(`${cmd} ${args.join(' ')} failed (${res.code}): ${res.stderr.slice(-2000)}`);
  return res;
}
const dk = (host, args, opts) => run('docker', ['-H', host, ...args], opts);
const bash = (script, opts) => run('bash', ['-c', `set -eo pipefail\n${script}`], opts);
const exists = (host, kind, name) => dk(host, [kind, 'inspect', name], { allowFail: true }).code === 0;

const live = new Set(); // children running now (killed on SIGINT/SIGTERM)

/**
 * Run one measured command. Wall time is from spawn to exit; with trackRss the child's VmHWM
 * (peak resident set) is polled from /proc every 50 ms until it exits and the maximum kept.
 */
function timed(cmd, args, { env, stdinFile, trackRss = false } = {}) {
  return new Promise((resolve, reject) => {
    const stdinFd = stdinFile ? fs.openSync(stdinFile, 'r') : undefined;
    const t0 = performance.now();
    const child = spawn(cmd, args, { env: env ?? childEnv(), stdio: [stdinFd ?? 'ignore', 'pipe', 'pipe'] });
    if (stdinFd !== undefined) fs.closeSync(stdinFd);
    live.add(child);
    let peakKiB = 0;
    const poll = () => {
      try {
        const m = /VmHWM:\s+(\d+)\s+kB/.exec(fs.readFileSync(`/proc/${child.pid}/status`, 'utf8'));
        if (m) peakKiB = Math.max(peakKiB, Number(m[1]));
      } catch {
        /* gone already */
      }
    };
    let timer;
    if (trackRss && child.pid) {
      poll();
      timer = setInterval(poll, 50);
    }
    const keep = (limit) => {
      let s = '';
      return { add: (d) => ((s += d), s.length > 2 * limit && (s = s.slice(-limit))), get: () => s.slice(-limit) };
    };
    const out = keep(64 * 1024);
    const err = keep(64 * 1024);
    child.stdout.on('data', (d) => out.add(d));
    child.stderr.on('data', (d) => err.add(d));
    let seconds;
    child.on('exit', () => {
      seconds = (performance.now() - t0) / 1000;
      if (timer) clearInterval(timer);
    });
    child.on('error', (e) => {
      live.delete(child);
      if (timer) clearInterval(timer);
      reject(new Error(`${cmd}: ${e.message}`));
    });
    child.on('close', (code, signal) => {
      live.delete(child);
      resolve({
        seconds: seconds ?? (performance.now() - t0) / 1000,
        code: code ?? (signal ? 128 : -1),
        signal,
        peakRssMB: trackRss ? peakKiB / 1024 : undefined,
        stdout: out.get(),
        stderr: err.get(),
      });
    });
  });
}

const median = (xs) => {
  if (!xs.length) return undefined;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const round = (x, d = 2) => (x === undefined || x === null || Number.isNaN(x) ? undefined : Math.round(x * 10 ** d) / 10 ** d);
const fmt = (x, d = 2) => (x === undefined || x === null || Number.isNaN(x) ? '—' : x.toFixed(d));

function saveLog(name, text) {
  fs.mkdirSync(path.join(OUT, 'logs'), { recursive: true });
  const file = path.join(OUT, 'logs', name);
  fs.writeFileSync(file, text);
  return path.relative(ROOT, file);
}

/** Every process: pid -> { ppid, ticks (utime + stime), cmd }. */
function procTable() {
  const t = new Map();
  for (const pid of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ');
      t.set(Number(pid), { ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]), cmd });
    } catch {
      /* gone meanwhile */
    }
  }
  return t;
}
const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout) || 100;

/**
 * Other work on the machine: processes of other developers' runs (vitest, ferry.js, tsc, npm
 * test/run) that are neither this benchmark, its ancestors nor its children, with all their
 * descendants (docker CLI calls, shells, ...). Returns their names and CPU ticks per pid.
 */
function foreignSnapshot() {
  const t = procTable();
  const kids = new Map();
  for (const [pid, e] of t) kids.set(e.ppid, [...(kids.get(e.ppid) ?? []), pid]);
  const ours = new Set(); // ourselves, our descendants (what we measure) and our ancestors (npm run bench)
  for (const stack = [process.pid]; stack.length; ) {
    const pid = stack.pop();
    if (!ours.has(pid)) ours.add(pid), stack.push(...(kids.get(pid) ?? []));
  }
  for (let p = process.ppid; p > 1 && t.has(p); p = t.get(p).ppid) ours.add(p);
  const roots = [];
  const names = new Set();
  for (const [pid, e] of t) {
    if (ours.has(pid)) continue;
    let name;
    if (/vitest/.test(e.cmd)) name = 'vitest';
    else if (/bin\/ferry\.js (\S+)/.test(e.cmd)) name = `ferry ${/bin\/ferry\.js (\S+)/.exec(e.cmd)[1]}`;
    else if (/(^|\/)tsc( |$)/.test(e.cmd) || /typescript\/bin\/tsc/.test(e.cmd)) name = 'tsc';
    else if (/^npm (test|run \S+)/.test(e.cmd)) name = e.cmd.split(' ').slice(0, 3).join(' ');
    if (name) {
      roots.push(pid);
      names.add(name);
    }
  }
  const ticks = new Map();
  const stack = [...roots];
  while (stack.length) {
    const pid = stack.pop();
    if (ticks.has(pid) || ours.has(pid)) continue;
    ticks.set(pid, t.get(pid)?.ticks ?? 0);
    stack.push(...(kids.get(pid) ?? []));
  }
  return { names: [...names], ticks };
}

/** Measure fn() and how busy other developers' processes were meanwhile (CPU seconds they used). */
async function watched(fn) {
  const before = foreignSnapshot();
  const cpu0 = cpuSnapshot();
  const load1 = Number(os.loadavg()[0].toFixed(2));
  const result = await fn();
  const cpu1 = cpuSnapshot();
  const after = foreignSnapshot();
  let ticks = 0;
  for (const [pid, t] of after.ticks) ticks += Math.max(0, t - (before.ticks.get(pid) ?? 0));
  const names = [...new Set([...before.names, ...after.names])];
  return {
    result,
    activity: {
      load1,
      foreign: names,
      foreignCpuSeconds: round(ticks / CLK_TCK, 2),
      machineCpuSeconds: round((cpu1.busy - cpu0.busy) / CLK_TCK, 2),
      // CPU time the hypervisor gave to someone else while this machine wanted it: on a shared host
      // it comes and goes, and a run that lost a lot of it is slow for reasons outside both sides.
      stealCpuSeconds: round((cpu1.steal - cpu0.steal) / CLK_TCK, 2),
      engineCpuSeconds: round((cpu1.engines - cpu0.engines) / CLK_TCK, 2),
      s3ServerCpuSeconds: round((cpu1.s3 - cpu0.s3) / CLK_TCK, 2),
    },
  };
}

/**
 * CPU ticks used so far: by the whole machine (/proc/stat: user, nice, system, irq, softirq,
 * steal), by the engines (every dockerd, with the children it has reaped: the docker-tar and
 * docker-untar re-executions that serve archive requests), and by the lab's S3 server (radosgw,
 * ceph-osd, ceph-mon).
 */
function cpuSnapshot() {
  const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const busy = f[0] + f[1] + f[2] + f[5] + f[6] + (f[7] ?? 0);
  const steal = f[7] ?? 0;
  let engines = 0;
  let s3 = 0;
  for (const pid of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      const comm = fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
      const isS3 = comm === 'radosgw' || comm === 'ceph-osd' || comm === 'ceph-mon';
      if (comm !== 'dockerd' && !isS3) continue;
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      const x = stat.slice(stat.lastIndexOf(')') + 2).split(' ').map(Number);
      const ticks = x[11] + x[12] + x[13] + x[14]; // utime, stime, cutime, cstime
      if (isS3) s3 += ticks;
      else engines += ticks;
    } catch {
      /* gone meanwhile */
    }
  }
  return { busy, engines, steal, s3 };
}

/** Read a file once so that it is in the page cache. */
const warmCache = (file) => run('sh', ['-c', 'cat "$1" > /dev/null', 'sh', file]);

// --------------------------------------------------------------------------- lab & workload ---
function setupLab() {
  log('starting the lab (.ci/lab.sh)');
  run('sh', [path.join(ROOT, '.ci', 'lab.sh')], { inherit: true });
  ensurePgImage();
}

/** The workload's image on engines A and B (the fixture script skips an engine that has it). */
function ensurePgImage({ verify } = {}) {
  if (exists(ENGINE_A, 'image', PG) && exists(ENGINE_B, 'image', PG)) return;
  log(`loading ${PG} (test/fixtures/build-postgres-image.sh, FERRY_PG_FLAVOR=${PG_FLAVOR})`);
  run('sh', [path.join(ROOT, 'test', 'fixtures', 'build-postgres-image.sh'), ENGINE_B], {
    inherit: true,
    env: childEnv({ FERRY_PG_FLAVOR: PG_FLAVOR, ...(verify === false ? { FERRY_PG_VERIFY: 'never' } : {}) }),
  });
}

/** A HOME whose ~/.ssh/config names the lab's sshd (engine B behind it) `newhost`, as test/helpers/lab.ts sshHome() does. */
function makeSshHome() {
  const home = path.join(WORK, 'home');
  const ssh = path.join(home, '.ssh');
  fs.mkdirSync(ssh, { recursive: true, mode: 0o700 });
  const knownHosts = path.join(ssh, 'known_hosts');
  fs.writeFileSync(knownHosts, fs.readFileSync(path.join(LAB, 'ssh', 'known_hosts'), 'utf8'));
  const config = path.join(ssh, 'config');
  fs.writeFileSync(
    config,
    ['Host newhost', '  HostName 127.0.0.1', '  Port 2222', '  User root', `  IdentityFile ${path.join(LAB, 'ssh', 'id_ed25519')}`, `  UserKnownHostsFile ${knownHosts}`, '  BatchMode yes', ''].join('\n'),
    { mode: 0o600 },
  );
  return { home, config, knownHosts };
}

const psql = (sql, db = 'postgres') => dk(ENGINE_A, ['exec', CTR, 'psql', '-X', '-q', '-U', 'postgres', '-d', db, '-Atc', sql], { allowFail: true });

async function waitForPostgres() {
  const end = Date.now() + 90_000;
  while (Date.now() < end) {
    if (psql('select 1').stdout === '1') return;
    const running = dk(ENGINE_A, ['inspect', '-f', '{{.State.Running}}', CTR], { allowFail: true }).stdout;
    if (running !== 'true') throw new Error(`${CTR} stopped while starting: ${dk(ENGINE_A, ['logs', '--tail', '30', CTR], { allowFail: true }).stderr}`);
    await sleep(500);
  }
  throw new Error(`postgres in ${CTR} did not accept connections within 90 s`);
}

/**
 * Build (or reuse) the workload on engine A. Returns facts about it: the random file's size and
 * sha256 (when verifying), the volume's byte count.
 */
async function ensureWorkload(sizeMiB, { verify }) {
  let info;
  try {
    info = JSON.parse(dk(ENGINE_A, ['container', 'inspect', CTR]).stdout)[0];
  } catch {
    info = undefined;
  }
  const mounted = info?.Mounts?.some((m) => m.Type === 'volume' && m.Name === VOL && m.Destination === PGDATA);
  if (info && (info.Config.Image !== PG || !mounted)) {
    log(`${CTR} exists but is not the benchmark workload; recreating it`);
    dk(ENGINE_A, ['rm', '-f', '-v', CTR]);
    info = undefined;
  }
  let reused = Boolean(info);
  if (!info) {
    log(`creating ${CTR} on engine A from ${PG} with volume ${VOL}`);
    dk(ENGINE_A, ['run', '-d', '--name', CTR, '--label', 'ferry-bench=workload', '-v', `${VOL}:${PGDATA}`, PG]);
  } else if (!info.State.Running) {
    dk(ENGINE_A, ['start', CTR]);
  }
  await waitForPostgres();
  if (psql(`select count(*) from t`, 'bench').stdout !== String(TABLE_ROWS)) {
    reused = false;
    log(`filling database "bench" (${TABLE_ROWS} rows)`);
    if (psql(`select 1 from pg_database where datname = 'bench'`).stdout !== '1') {
      const r = psql('create database bench');
      if (r.code !== 0) throw new Error(`create database: ${r.stderr}`);
    }
    const r = psql(`drop table if exists t; create table t (id int primary key, v text); insert into t select g, md5(g::text) from generate_series(1, ${TABLE_ROWS}) g; checkpoint`, 'bench');
    if (r.code !== 0) throw new Error(`fill table: ${r.stderr}`);
  }
  const want = sizeMiB * MiB;
  const have = dk(ENGINE_A, ['exec', CTR, 'sh', '-c', `stat -c %s ${RANDOM_FILE} 2>/dev/null || echo 0`]).stdout;
  if (Number(have) !== want) {
    reused = false;
    log(`writing ${sizeMiB} MiB of random data to ${RANDOM_FILE} (dd from /dev/urandom, in the container)`);
    dk(ENGINE_A, [
      'exec', CTR, 'sh', '-c',
      `set -e; rm -f ${RANDOM_FILE}; dd if=/dev/urandom of=${RANDOM_FILE}.tmp bs=1M count=${sizeMiB} status=none; mv ${RANDOM_FILE}.tmp ${RANDOM_FILE}; chown postgres:postgres ${RANDOM_FILE}`,
    ]);
  }
  if (dk(ENGINE_A, ['exec', CTR, 'grep', '-c', MARKER, '/etc/issue'], { allowFail: true }).code !== 0) {
    reused = false;
    dk(ENGINE_A, ['exec', CTR, 'sh', '-c', `echo '${MARKER}' >> /etc/issue`]);
  }
  run('sync', []);
  const du = dk(ENGINE_A, ['exec', CTR, 'du', '-sb', PGDATA]).stdout.split(/\s+/)[0];
  const facts = { container: CTR, volume: VOL, image: PG, randomFileMiB: sizeMiB, volumeBytes: Number(du), reused };
  if (verify) {
    facts.sha256 = dk(ENGINE_A, ['exec', CTR, 'sha256sum', RANDOM_FILE]).stdout.split(/\s+/)[0];
    facts.pgVersionOwner = dk(ENGINE_A, ['exec', CTR, 'stat', '-c', '%u:%g', `${PGDATA}/PG_VERSION`]).stdout;
  }
  log(`workload ${reused ? 'reused' : 'ready'}: ${CTR}, volume ${VOL} holds ${(facts.volumeBytes / MiB).toFixed(0)} MiB`);
  return facts;
}

// ------------------------------------------------------------------------------ engine chores ---
function refs(host, repo) {
  return dk(host, ['images', '--format', '{{.Repository}}:{{.Tag}}', repo], { allowFail: true })
    .stdout.split('\n')
    .filter((l) => l && !l.endsWith(':<none>'));
}

/** Remove what one benchmark run leaves on engine A: baseline snapshot and any ferry snapshot of the workload. */
function clearSourceLeftovers() {
  dk(ENGINE_A, ['rmi', SNAP], { allowFail: true });
  for (const r of refs(ENGINE_A, FERRY_REPO)) dk(ENGINE_A, ['rmi', r], { allowFail: true });
}

/** Remove from engine B what a migration brought; with base, also ferry-test/postgres:15. */
function clearTarget({ base }) {
  dk(ENGINE_B, ['rm', '-f', '-v', CTR], { allowFail: true });
  dk(ENGINE_B, ['rm', '-f', '-v', HOLDER], { allowFail: true });
  dk(ENGINE_B, ['volume', 'rm', '-f', VOL], { allowFail: true });
  for (const r of refs(ENGINE_B, FERRY_REPO)) dk(ENGINE_B, ['rmi', r], { allowFail: true });
  dk(ENGINE_B, ['rmi', SNAP], { allowFail: true });
  if (base) dk(ENGINE_B, ['rmi', PG], { allowFail: true });
}

/** Whether any image on engine B holds a layer of ferry-test/postgres:15 (as on engine A). */
function targetHasBaseLayers() {
  const baseLayers = new Set(JSON.parse(dk(ENGINE_A, ['image', 'inspect', PG]).stdout)[0].RootFS.Layers);
  const ids = dk(ENGINE_B, ['images', '-aq', '--no-trunc'], { allowFail: true }).stdout.split('\n').filter(Boolean);
  if (!ids.length) return false;
  const imgs = JSON.parse(dk(ENGINE_B, ['image', 'inspect', ...new Set(ids)], { allowFail: true }).stdout || '[]');
  return imgs.some((i) => (i.RootFS?.Layers ?? []).some((l) => baseLayers.has(l)));
}

/** Check on engine B that the migrated data and writable layer are there (untimed). */
function verifyTarget(side, container, workload, { verify }) {
  const problems = [];
  const script = `stat -c '%s' /d/bench-random.bin; stat -c '%u:%g' /d/PG_VERSION${verify ? '; sha256sum /d/bench-random.bin' : ''}`;
  const r = dk(ENGINE_B, ['run', '--rm', '--network', 'none', '-v', `${VOL}:/d:ro`, BUSYBOX, 'sh', '-c', script], { allowFail: true });
  if (r.code !== 0) problems.push(`cannot read volume ${VOL} on B: ${r.stderr}`);
  else {
    const [size, owner, sha] = r.stdout.split('\n');
    if (Number(size) !== workload.randomFileMiB * MiB) problems.push(`bench-random.bin has ${size} bytes on B, want ${workload.randomFileMiB * MiB}`);
    if (workload.pgVersionOwner && owner !== workload.pgVersionOwner) problems.push(`PG_VERSION owned by ${owner} on B, ${workload.pgVersionOwner} on A`);
    if (verify && sha?.split(/\s+/)[0] !== workload.sha256) problems.push('bench-random.bin differs on B (sha256)');
  }
  const issue = run('bash', ['-c', `set -o pipefail; docker -H ${ENGINE_B} cp ${container}:/etc/issue - | tar -xO`], { allowFail: true });
  if (issue.code !== 0) problems.push(`cannot read /etc/issue from ${container} on B: ${issue.stderr}`);
  else if (!issue.stdout.includes(MARKER)) problems.push(`the writable-layer change (/etc/issue) is missing in ${container} on B`);
  if (problems.length) log(`${side}: target check FAILED: ${problems.join('; ')}`);
  return problems;
}

// ------------------------------------------------------------------------------- scenarios ---
/**
 * One measurement of one side (run i), retried on failure: prepare() runs untimed before every
 * attempt, spec() gives { cmd, args, env?, stdinFile?, trackRss? }, check(r) may add { info,
 * problems }. The entry goes to res[side]; its activity to res.activity, failures to res.errors.
 */
async function measure(res, opts, i, side, { prepare, spec: specOf, check, trackRss = false }) {
  const { id, labels } = res;
  // A failed attempt (non-zero exit, or a target check that failed) is recorded and retried,
  // up to opts.retries times per measurement: on a shared lab, other runs' tests kill sshd
  // sessions and processes (see the report's notes), which has nothing to do with speed.
  for (let attempt = 1; ; attempt++) {
    const prep = (await prepare?.()) ?? {};
    log(`${id} run ${i + 1}/${opts.runs}: ${labels[side]}${attempt > 1 ? ` (attempt ${attempt})` : ''}`);
    const spec = specOf();
    const { result: r, activity: act } = await watched(() => timed(spec.cmd, spec.args, { env: spec.env, stdinFile: spec.stdinFile, trackRss: trackRss || spec.trackRss }));
    res.activity.push({ run: i + 1, side, attempt, seconds: round(r.seconds, 3), ...act });
    if (act.foreignCpuSeconds > 0) log(`  meanwhile other work used ${act.foreignCpuSeconds} CPU s (${act.foreign.join(', ')}; load ${act.load1})`);
    const entry = { run: i + 1, attempt, seconds: round(r.seconds, 3), code: r.code, peakRssMB: round(r.peakRssMB, 1), ...prep };
    const logName = `${id}-${side}-run${i + 1}${attempt > 1 ? `-attempt${attempt}` : ''}.log`;
    const logText = () => `$ ${spec.cmd} ${spec.args.join(' ')}\nexit ${r.code}${r.signal ? ` (${r.signal})` : ''}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}\n`;
    if (side !== 'baseline' || r.code !== 0) entry.log = saveLog(logName, logText());
    if (r.code !== 0) {
      const lines = r.stderr.split('\n').map((l) => l.trim()).filter(Boolean);
      const why = [...lines].reverse().find((l) => /error|fail|closed|denied|refused|reset|SIGTERM|interrupted/i.test(l)) ?? lines.at(-1) ?? '';
      entry.problems = [`exited with ${r.code}${why ? `: ${why}` : ''}`];
    } else {
      const extra = (await check?.(r)) ?? {};
      Object.assign(entry, extra.info ?? {});
      if (extra.problems?.length) entry.problems = extra.problems;
    }
    log(`  ${labels[side]}: ${r.seconds.toFixed(2)} s${entry.peakRssMB !== undefined ? `, peak RSS ${entry.peakRssMB} MB` : ''}${entry.problems ? ` FAILED: ${entry.problems.join('; ')}` : ''}`);
    res[side].push(entry);
    if (!entry.problems) return entry;
    res.errors.push(`${labels[side]} run ${i + 1} attempt ${attempt}: ${entry.problems.join('; ')}${entry.log ? ` (${entry.log})` : ''}`);
    if (attempt > opts.retries) {
      res.incomplete = true;
      return entry;
    }
  }
}

/**
 * Run ferry and the baseline `runs` times each, alternating (ferry first on even runs, the
 * baseline first on odd ones). prepare() runs untimed before every single measurement.
 */
async function comparative(id, opts, { prepare, ferry, baseline, check, rssOf = 'ferry', labels = { ferry: 'ferry', baseline: 'baseline' } }) {
  const res = { id, title: TITLES[id], target: TARGETS[id], labels, ferry: [], baseline: [], errors: [], activity: [] };
  for (let i = 0; i < opts.runs; i++) {
    const order = i % 2 === 0 ? ['ferry', 'baseline'] : ['baseline', 'ferry'];
    for (const side of order) {
      await measure(res, opts, i, side, {
        prepare: () => prepare?.(side, i),
        spec: () => (side === 'ferry' ? ferry(i) : baseline(i)),
        check: (r) => check?.(side, i, r),
        trackRss: side === rssOf,
      });
    }
  }
  const ok = (side) => res[side].filter((e) => e.code === 0 && !e.problems).map((e) => e.seconds);
  res.ferryMedian = round(median(ok('ferry')), 3);
  res.baselineMedian = round(median(ok('baseline')), 3);
  res.ratio = res.ferryMedian && res.baselineMedian ? round(res.ferryMedian / res.baselineMedian, 3) : undefined;
  res.peakRssMB = round(Math.max(0, ...res[rssOf].map((e) => e.peakRssMB ?? 0)), 1) || undefined;
  // Median CPU seconds per measurement on each side: the whole machine, and the engines' share.
  const cpuOf = (side, key) => round(median(res.activity.filter((a) => a.side === side && a[key] !== undefined).map((a) => a[key])), 2);
  res.cpu = Object.fromEntries(['ferry', 'baseline'].map((side) => [side, { machine: cpuOf(side, 'machineCpuSeconds'), engines: cpuOf(side, 'engineCpuSeconds'), steal: cpuOf(side, 'stealCpuSeconds') }]));
  res.pass = !res.incomplete && res.ratio !== undefined && res.ratio <= res.target;
  log(`${id}: ferry ${fmt(res.ferryMedian)} s, baseline ${fmt(res.baselineMedian)} s, ratio ${fmt(res.ratio)} (target ≤ ${res.target}) ${res.pass ? 'PASS' : 'FAIL'}${res.errors.length ? ` (${res.errors.length} failed attempt(s))` : ''}`);
  return res;
}

async function scenarioBackup(opts, ctx) {
  const dir = path.join(WORK, 'backup');
  const ferryOut = path.join(dir, 'ferry.tar');
  const snapOut = path.join(dir, 'snap.tar');
  const volOut = path.join(dir, 'volume.tar');
  const wipe = () => {
    fs.rmSync(dir, { recursive: true, force: true });
    fs.mkdirSync(dir, { recursive: true });
  };
  const fileSize = (f) => (fs.existsSync(f) ? fs.statSync(f).size : 0);
  try {
    const res = await comparative('backup', opts, {
      prepare: () => {
        wipe();
        clearSourceLeftovers();
        run('sync', []);
      },
      ferry: () => ({ cmd: BIN, args: ['backup', CTR, '--compress', 'none', '-o', ferryOut] }),
      baseline: () => ({
        cmd: 'bash',
        args: ['-c', `set -eo pipefail; docker commit ${CTR} ${SNAP} >/dev/null && docker save -o ${snapOut} ${SNAP} && docker cp ${CTR}:${PGDATA} - > ${volOut}`],
      }),
      check: (side) => {
        const bytes = side === 'ferry' ? fileSize(ferryOut) : fileSize(snapOut) + fileSize(volOut);
        const problems = bytes < ctx.workload.randomFileMiB * MiB ? [`output holds only ${bytes} bytes`] : [];
        return { info: { outputBytes: bytes }, problems };
      },
    });
    return await floors(res, opts, [
      {
        // ferry's own engine work, without ferry: commit, then the save and the volume read at once, into /dev/null.
        name: 'commit, then save and read the volume at once, to /dev/null',
        command: `docker commit ${CTR} ${SNAP} >/dev/null && { docker save ${SNAP} > /dev/null & p=$!; docker cp ${CTR}:${PGDATA} - > /dev/null; wait $p; }`,
        prepare: () => {
          clearSourceLeftovers();
          run('sync', []);
        },
      },
      {
        // The same with the volume read as ferry reads it where it runs as root beside the engine.
        name: 'commit, then save and read the volume directory with GNU tar at once, to /dev/null',
        command: `docker commit ${CTR} ${SNAP} >/dev/null && { docker save ${SNAP} > /dev/null & p=$!; tar -C "$(docker volume inspect -f '{{.Mountpoint}}' ${VOL})" -cf - . | cat > /dev/null; wait $p; }`,
        prepare: () => {
          clearSourceLeftovers();
          run('sync', []);
        },
      },
    ]);
  } finally {
    wipe();
    clearSourceLeftovers();
  }
}

function migrateSsh(ctx) {
  return `ssh -F ${ctx.ssh.config} newhost`;
}

function migrateSpecs(ctx) {
  const { home } = ctx.ssh;
  const ssh = migrateSsh(ctx);
  return {
    ferry: () => ({
      cmd: BIN,
      args: ['migrate', CTR, '--to', 'ssh://newhost', '--no-start'],
      env: childEnv({ HOME: home }),
    }),
    baseline: () => ({
      cmd: 'bash',
      args: [
        '-c',
        [
          'set -eo pipefail',
          `docker commit ${CTR} ${SNAP} >/dev/null`,
          `docker save ${SNAP} | ${ssh} docker load >/dev/null`,
          `${ssh} docker volume create ${VOL} >/dev/null`,
          `${ssh} docker create --name ${HOLDER} -v ${VOL}:/data ${SNAP} >/dev/null`,
          // SRC/. = the directory's content (entries ./…); "-" into DEST = extract into /data
          `docker cp ${CTR}:${PGDATA}/. - | ${ssh} docker cp - ${HOLDER}:/data`,
        ].join('\n'),
      ],
      env: childEnv({ HOME: home }),
    }),
    check: (side) => {
      const problems = verifyTarget(side, side === 'ferry' ? CTR : HOLDER, ctx.workload, { verify: ctx.opts.verify });
      return { problems };
    },
  };
}

async function scenarioMigrate(opts, ctx) {
  const specs = migrateSpecs(ctx);
  try {
    return await comparative('migrate', opts, {
      ...specs,
      prepare: (side, i) => {
        clearSourceLeftovers();
        clearTarget({ base: true });
        run('sync', []);
        if (targetHasBaseLayers()) {
          ctx.notes.add(`migrate: before ${side} run ${i + 1} engine B still held the layers of ${PG} (another image there shares them), so that target was not empty`);
          log('warning: engine B still holds layers of the base image; the target is not entirely empty');
          return { targetHadBaseLayers: true };
        }
        return {};
      },
    });
  } finally {
    clearSourceLeftovers();
    clearTarget({ base: false });
    log(`restoring ${PG} on engine B`);
    ensurePgImage();
  }
}

/**
 * What the engines alone need for the volume, timed in the same run as a scenario: the floor
 * under any tool that moves the data through the Engine API. Each floor is a shell pipeline of
 * docker CLI calls; prepare() runs untimed before each. Returns [{ name, command, medianSeconds,
 * runs, bestRatio }], bestRatio being the floor over the scenario's baseline median: no ferry
 * run can have a lower ratio than that unless it skips this work.
 */
async function floors(res, opts, list) {
  res.floors = [];
  for (const f of list) {
    const secs = [];
    for (let i = 0; i < opts.runs; i++) {
      f.prepare?.();
      log(`${res.id} floor run ${i + 1}/${opts.runs}: ${f.name}`);
      const { result: r, activity: act } = await watched(() => timed('bash', ['-c', `set -eo pipefail; ${f.command}`]));
      res.activity.push({ run: i + 1, side: `floor: ${f.name}`, seconds: round(r.seconds, 3), ...act });
      if (r.code !== 0) {
        res.errors.push(`floor ${f.name} run ${i + 1} exited with ${r.code}: ${r.stderr.slice(-300)}`);
        continue;
      }
      log(`  ${r.seconds.toFixed(2)} s`);
      secs.push(r.seconds);
    }
    const m = round(median(secs), 3);
    res.floors.push({ name: f.name, command: f.command, medianSeconds: m, runs: secs.map((x) => round(x, 3)), bestRatio: m && res.baselineMedian ? round(m / res.baselineMedian, 3) : undefined });
  }
  return res;
}

async function scenarioMigrate2(opts, ctx) {
  const specs = migrateSpecs(ctx);
  ensurePgImage({ verify: false });
  const prepare = () => {
    clearSourceLeftovers();
    clearTarget({ base: false });
    ensurePgImage({ verify: false });
    run('sync', []);
  };
  try {
    const res = await comparative('migrate2', opts, { ...specs, prepare });
    return await floors(res, opts, [
      { name: 'read the volume once through engine A (archive GET to /dev/null)', command: `docker cp ${CTR}:${PGDATA}/. - > /dev/null`, prepare: () => run('sync', []) },
      {
        name: 'copy the volume from engine A into engine B, no SSH (archive GET into archive PUT)',
        command: `docker -H ${ENGINE_B} volume create ${VOL} >/dev/null && docker -H ${ENGINE_B} create --name ${HOLDER} -v ${VOL}:/data ${PG} >/dev/null && docker cp ${CTR}:${PGDATA}/. - | docker -H ${ENGINE_B} cp - ${HOLDER}:/data`,
        prepare,
      },
      {
        // What ferry does where it is root on both hosts, done by hand with OpenSSH: no engine in the data path.
        name: 'copy the volume directory into a new volume on newhost with GNU tar over OpenSSH, no engine',
        command: `${migrateSsh(ctx)} docker volume create ${VOL} >/dev/null && tar -C "$(docker volume inspect -f '{{.Mountpoint}}' ${VOL})" -cf - . | ${migrateSsh(ctx)} 'tar -C "$(docker volume inspect -f "{{.Mountpoint}}" ${VOL})" -xpf - --numeric-owner'`,
        prepare,
      },
    ]);
  } finally {
    clearSourceLeftovers();
    clearTarget({ base: false });
  }
}

async function scenarioCompress(opts, ctx) {
  const dir = path.join(WORK, 'compress');
  fs.mkdirSync(dir, { recursive: true });
  const tarFile = path.join(dir, 'volume.tar');
  const res = { id: 'compress', title: TITLES.compress, codecs: [], errors: [], activity: [] };
  try {
    log(`taking the volume tar once: docker cp ${CTR}:${PGDATA}/. - > ${tarFile}`);
    bash(`docker cp ${CTR}:${PGDATA}/. - > ${tarFile}`);
    const inBytes = fs.statSync(tarFile).size;
    warmCache(tarFile);
    res.inputBytes = inBytes;
    const zlibScript = path.join(ROOT, 'bench', 'zlib-compress.mjs');
    const codecs = [
      { name: 'zstd -3 -T0 (CLI)', cmd: 'zstd', args: ['-3', '-T0', '-v', '-f', tarFile, '-o', '/dev/null'], parse: 'zstd' },
      { name: 'zstd -1 -T0 (CLI)', cmd: 'zstd', args: ['-1', '-T0', '-v', '-f', tarFile, '-o', '/dev/null'], parse: 'zstd' },
      { name: 'gzip level 1 (Node zlib)', cmd: process.execPath, args: [zlibScript, 'gzip', '1', tarFile], parse: 'json' },
      { name: 'gzip level 6 (Node zlib)', cmd: process.execPath, args: [zlibScript, 'gzip', '6', tarFile], parse: 'json' },
    ];
    const zlibHasZstd = run(process.execPath, ['-e', 'process.exit(typeof require("zlib").createZstdCompress === "function" ? 0 : 1)'], { allowFail: true }).code === 0;
    if (zlibHasZstd) codecs.push({ name: 'zstd level 3 (Node zlib)', cmd: process.execPath, args: [zlibScript, 'zstd', '3', tarFile], parse: 'json' });
    else ctx.notes.add(`Node ${process.version} has no built-in zstd (zlib.createZstdCompress): not measured`);
    for (const c of codecs) c.runs = [];
    for (let i = 0; i < opts.runs; i++) {
      for (const c of codecs) {
        log(`compress run ${i + 1}/${opts.runs}: ${c.name}`);
        const { result: r, activity: act } = await watched(() => timed(c.cmd, c.args));
        res.activity.push({ run: i + 1, side: c.name, seconds: round(r.seconds, 3), ...act });
        if (act.foreignCpuSeconds > 0) log(`  meanwhile other work used ${act.foreignCpuSeconds} CPU s (${act.foreign.join(', ')}; load ${act.load1})`);
        const entry = { run: i + 1, seconds: round(r.seconds, 3), code: r.code };
        if (r.code !== 0) {
          entry.log = saveLog(`compress-${c.name.replace(/\W+/g, '_')}-run${i + 1}.log`, `${r.stdout}\n${r.stderr}`);
          res.errors.push(`${c.name} run ${i + 1} exited with ${r.code}`);
        } else if (c.parse === 'zstd') {
          const m = /:\s*([\d.]+)%/.exec(r.stderr);
          entry.ratio = m ? Number(m[1]) / 100 : undefined;
        } else {
          const j = JSON.parse(r.stdout.trim().split('\n').pop());
          entry.ratio = j.out / j.in;
        }
        log(`  ${r.seconds.toFixed(2)} s, ${(inBytes / 1e6 / r.seconds).toFixed(0)} MB/s, ratio ${fmt(entry.ratio, 4)}`);
        c.runs.push(entry);
      }
    }
    for (const c of codecs) {
      const ok = c.runs.filter((e) => e.code === 0);
      const secs = median(ok.map((e) => e.seconds));
      res.codecs.push({
        codec: c.name,
        command: [c.cmd === process.execPath ? 'node' : c.cmd, ...c.args.map((a) => (a === tarFile ? '<volume.tar>' : path.isAbsolute(a) ? path.relative(ROOT, a) : a))].join(' '),
        medianSeconds: round(secs, 3),
        mbPerSecond: secs ? round(inBytes / 1e6 / secs, 1) : undefined,
        ratio: round(median(ok.map((e) => e.ratio).filter((x) => x !== undefined)), 4),
        runs: c.runs,
      });
    }
    return res;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * The pre-copy (issue 25), under the same write load each time (a writer inserts rows and rewrites
 * 1 % of the random file in place while ferry copies):
 * - the cutover's downtime: `migrate --stop-source` to ssh://newhost (B keeps the base image) with
 *   the pre-copy ("ferry") and with one pass after the stop (--no-precopy, "baseline": what ferry
 *   did before); the figure compared is `downtimeMs` from --json (source stopped -> target
 *   running and past its watch); the seconds of the whole run are in the Runs list;
 * - the pause of a copy (`migrate --no-start` to ssh://newhost, the source paused, not stopped),
 *   with the pre-copy and with --no-precopy: `pausedMs`;
 * - the pause of `backup --compress none` to a local file, with --precopy and without: `pausedMs`.
 * Returns the cutover's result, with the other two as its `copy` and `backup`.
 */
async function scenarioPrecopy(opts, ctx) {
  const { home } = ctx.ssh;
  const stepMiB = 1;
  const steps = Math.max(1, Math.round((opts.sizeMiB * 0.01) / stepMiB)); // 1 % of the random file
  // The inserts go on until the container stops or the next measurement's writer takes over
  // (a copy and a backup leave the source running): each stops at the stop file.
  const STOP = '/tmp/ferry-bench-writer.stop';
  const writer = [
    `rm -f ${STOP}`,
    `(i=0; while [ ! -e ${STOP} ]; do i=$((i+1)); psql -X -q -U postgres -d bench -c "insert into t values (1000000 + $i, 'live')" >/dev/null 2>&1; done) &`,
    `for k in $(seq 1 ${steps}); do dd if=/dev/urandom of=${RANDOM_FILE} bs=1M count=${stepMiB} seek=$(( (k * 7919) % ${opts.sizeMiB} )) conv=notrunc status=none; sleep 0.2; done; wait`,
  ].join('\n');
  const stopWriter = async () => {
    if (dk(ENGINE_A, ['exec', CTR, 'touch', STOP], { allowFail: true }).code === 0) await sleep(300);
  };
  const dir = path.join(WORK, 'precopy-backup');
  const bundle = path.join(dir, 'bundle.tar');
  const prepare = async () => {
    clearSourceLeftovers();
    clearTarget({ base: false });
    fs.rmSync(dir, { recursive: true, force: true });
    fs.mkdirSync(dir, { recursive: true });
    dk(ENGINE_A, ['start', CTR], { allowFail: true });
    await waitForPostgres();
    await stopWriter();
    psql('delete from t where id > 1000000', 'bench');
    dk(ENGINE_A, ['exec', '-d', CTR, 'sh', '-c', writer]);
    await sleep(500);
    run('sync', []);
    return {};
  };
  const migrateSpec = (extra) => () => ({
    cmd: BIN,
    args: ['migrate', CTR, '--to', 'ssh://newhost', '--json', ...extra],
    env: childEnv({ HOME: home }),
  });
  const backupSpec = (extra) => () => ({ cmd: BIN, args: ['backup', CTR, '--compress', 'none', '-o', bundle, '--json', ...extra] });
  /** The figure each measurement reports (from --json), per side, and the pre-copy's own report. */
  const figures = (key) => {
    const got = { ferry: [], baseline: [] };
    const check = (side, _i, r) => {
      try {
        const j = JSON.parse(r.stdout);
        got[side].push(j[key] / 1000);
        const v = j.dataPaths?.volumes?.[0]?.precopy;
        return { info: { [`${key.replace(/Ms$/, '')}Seconds`]: j[key] / 1000, precopy: v, frozenSteps: j.frozenSteps } };
      } catch (err) {
        return { problems: [`no --json result: ${err.message}`] };
      }
    };
    return { got, check, medians: () => ({ ferry: round(median(got.ferry), 3), baseline: round(median(got.baseline), 3) }) };
  };
  try {
    const down = figures('downtimeMs');
    const res = await comparative('precopy', opts, {
      labels: { ferry: 'pre-copy', baseline: 'one pass (--no-precopy)' },
      ferry: migrateSpec(['--stop-source', '--stop-timeout', '30']),
      baseline: migrateSpec(['--stop-source', '--stop-timeout', '30', '--no-precopy']),
      prepare,
      check: down.check,
    });
    res.downtime = down.medians();
    res.target = undefined; // the wall-clock ratio is not the point here: see res.downtime
    log(`precopy: downtime with the pre-copy ${fmt(res.downtime.ferry)} s, one pass ${fmt(res.downtime.baseline)} s`);

    const copyPause = figures('pausedMs');
    res.copy = await comparative('precopy-copy', opts, {
      labels: { ferry: 'copy, pre-copy', baseline: 'copy, one pass (--no-precopy)' },
      ferry: migrateSpec(['--no-start']),
      baseline: migrateSpec(['--no-start', '--no-precopy']),
      prepare,
      check: copyPause.check,
    });
    res.copy.paused = copyPause.medians();
    res.copy.target = undefined;
    log(`precopy: a copy paused the source ${fmt(res.copy.paused.ferry)} s with the pre-copy, ${fmt(res.copy.paused.baseline)} s without`);

    const backupPause = figures('pausedMs');
    res.backup = await comparative('precopy-backup', opts, {
      labels: { ferry: 'backup --precopy', baseline: 'backup' },
      ferry: backupSpec(['--precopy']),
      baseline: backupSpec([]),
      prepare,
      check: backupPause.check,
    });
    res.backup.paused = backupPause.medians();
    res.backup.target = undefined;
    log(`precopy: a backup paused the source ${fmt(res.backup.paused.ferry)} s with --precopy, ${fmt(res.backup.paused.baseline)} s without`);
    if (res.copy.incomplete || res.backup.incomplete) res.incomplete = true;
    res.errors.push(...res.copy.errors, ...res.backup.errors);
    return res;
  } finally {
    await stopWriter();
    fs.rmSync(dir, { recursive: true, force: true });
    clearSourceLeftovers();
    clearTarget({ base: false });
    dk(ENGINE_A, ['start', CTR], { allowFail: true });
  }
}

async function scenarioSsh(opts, ctx) {
  const dir = path.join(WORK, 'ssh');
  fs.mkdirSync(dir, { recursive: true });
  const payload = path.join(dir, 'payload.bin');
  try {
    log(`writing a ${opts.sizeMiB} MiB random payload`);
    run('dd', ['if=/dev/urandom', `of=${payload}`, 'bs=1M', `count=${opts.sizeMiB}`, 'status=none']);
    warmCache(payload);
    const v = run('ssh', ['-v', '-F', ctx.ssh.config, 'newhost', 'true'], { allowFail: true });
    const m = /kex: client->server cipher: (\S+) MAC: (\S+)/.exec(v.stderr);
    ctx.facts.opensshCipher = m ? `${m[1]}${m[2] !== '<implicit>' ? ` / ${m[2]}` : ''}` : 'unknown';
    let ssh2Cipher;
    const res = await comparative('ssh', opts, {
      ferry: () => ({
        cmd: process.execPath,
        args: [path.join(ROOT, 'bench', 'ssh2-cat.mjs'), payload],
        env: childEnv({ BENCH_SSH_KNOWN_HOSTS: ctx.ssh.knownHosts, BENCH_SSH_KEY: path.join(LAB, 'ssh', 'id_ed25519') }),
      }),
      baseline: () => ({ cmd: 'ssh', args: ['-F', ctx.ssh.config, 'newhost', 'cat > /dev/null'], stdinFile: payload }),
      labels: { ferry: 'ssh2', baseline: 'OpenSSH' },
      check: (side, _i, r) => {
        if (side !== 'ferry') return {};
        const j = JSON.parse(r.stdout.trim().split('\n').pop() || '{}');
        ssh2Cipher = j.cipher;
        return { problems: j.bytes === opts.sizeMiB * MiB ? [] : [`ssh2 sent ${j.bytes} bytes`] };
      },
    });
    ctx.facts.ssh2Cipher = ssh2Cipher ?? 'unknown';
    const bytes = opts.sizeMiB * MiB;
    res.ferryMBps = res.ferryMedian ? round(bytes / 1e6 / res.ferryMedian, 1) : undefined;
    res.baselineMBps = res.baselineMedian ? round(bytes / 1e6 / res.baselineMedian, 1) : undefined;
    return res;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

// ------------------------------------------------------------------------------------- S3 ---
/** The lab's S3 server as .ci/lab.sh wrote it down ($LAB/s3/s3.env): endpoint, bucket, keys, region. */
function labS3() {
  const file = path.join(LAB, 's3', 's3.env');
  const env = Object.fromEntries(
    fs
      .readFileSync(file, 'utf8')
      .split('\n')
      .map((l) => /^([A-Z0-9_]+)=(.*)$/.exec(l.trim()))
      .filter(Boolean)
      .map((m) => [m[1], m[2].replace(/^(['"])(.*)\1$/, '$2')]),
  );
  for (const k of ['S3_ENDPOINT', 'S3_BUCKET', 'AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY']) if (!env[k]) throw new Error(`${file} has no ${k}`);
  const region = env.AWS_REGION || 'us-east-1';
  return {
    endpoint: env.S3_ENDPOINT,
    bucket: env.S3_BUCKET,
    region,
    credentials: { accessKeyId: env.AWS_ACCESS_KEY_ID, secretAccessKey: env.AWS_SECRET_ACCESS_KEY },
    /** What ferry and the raw script get: the lab's keys, and nothing inherited that would point elsewhere. */
    env: (extra = {}) => {
      const e = childEnv(extra);
      for (const k of ['AWS_PROFILE', 'AWS_SESSION_TOKEN', 'AWS_ENDPOINT_URL', 'AWS_ENDPOINT_URL_S3', 'AWS_CONFIG_FILE', 'AWS_SHARED_CREDENTIALS_FILE', 'FERRY_S3_PATH_STYLE']) delete e[k];
      return { ...e, AWS_ACCESS_KEY_ID: env.AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY: env.AWS_SECRET_ACCESS_KEY, AWS_REGION: region, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' };
    },
    /** `s3+http://host:port/bucket/<key>`: a store (or a bundle) in the lab's bucket, as the tests name it. */
    url: (key) => `s3+${env.S3_ENDPOINT.replace(/\/+$/, '')}/${env.S3_BUCKET}/${key}`,
  };
}

/** Looking at the bucket with the SDK directly (not through ferry): objects and uploads in progress under a prefix, and removing them. */
async function s3Admin(lab) {
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';
  const sdk = await import('@aws-sdk/client-s3');
  const client = new sdk.S3Client({
    endpoint: lab.endpoint,
    region: lab.region,
    forcePathStyle: true,
    credentials: lab.credentials,
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
  const Bucket = lab.bucket;
  const objects = async (prefix) => {
    const out = [];
    let token;
    do {
      const r = await client.send(new sdk.ListObjectsV2Command({ Bucket, Prefix: `${prefix}/`, ContinuationToken: token }));
      for (const o of r.Contents ?? []) out.push({ key: o.Key, size: o.Size });
      token = r.IsTruncated ? r.NextContinuationToken : undefined;
    } while (token);
    return out;
  };
  const uploads = async (prefix) => {
    const r = await client.send(new sdk.ListMultipartUploadsCommand({ Bucket, Prefix: `${prefix}/` }));
    return (r.Uploads ?? []).map((u) => ({ key: u.Key, id: u.UploadId }));
  };
  return {
    objects,
    uploads,
    size: async (key) => (await client.send(new sdk.HeadObjectCommand({ Bucket, Key: key }))).ContentLength,
    /** Remove everything under prefix/: uploads in progress, then objects. */
    clean: async (prefix) => {
      for (const u of await uploads(prefix)) await client.send(new sdk.AbortMultipartUploadCommand({ Bucket, Key: u.key, UploadId: u.id }));
      for (const o of await objects(prefix)) await client.send(new sdk.DeleteObjectCommand({ Bucket, Key: o.key }));
    },
    destroy: () => client.destroy(),
  };
}

/**
 * S3 (issue 23), on the lab's Ceph RGW, five measurements per run in one rotation:
 * ferry's backup of the workload to an S3 prefix and to a local directory (both `--compress none`,
 * both stores), the raw upload of a reference bundle's bytes with the SDK's own multipart uploader
 * (bench/s3-upload.mjs), and ferry's restore onto engine B of that same object from S3 and of the
 * reference bundle from its local file (`--no-start`, engine B emptied before each). The upload
 * throughput compared is ferry's whole S3 backup (object bytes over the run's wall time: the upload
 * overlaps the read, so it spans the run) against the raw upload's own (bytes over the upload's
 * time, without the node start). Everything it puts in the bucket is removed at the end, and the
 * prefix is checked for objects and uploads left over.
 */
async function scenarioS3(opts, ctx) {
  const lab = labS3();
  const admin = await s3Admin(lab);
  const prefix = `ferry-bench/${new Date().toISOString().replace(/[-:]|\.\d+/g, '')}-${process.pid}`;
  const dir = path.join(WORK, 's3');
  const storeDir = path.join(dir, 'store');
  const refDir = path.join(dir, 'ref');
  const rawKey = `${prefix}/raw/ferry-bench-pg-raw.tar`;
  const sides = ['s3Backup', 'fileBackup', 'rawUpload', 's3Restore', 'fileRestore'];
  const labels = {
    s3Backup: 'ferry backup to S3',
    fileBackup: 'ferry backup to a local directory',
    rawUpload: 'raw upload (lib-storage Upload)',
    s3Restore: 'ferry restore from S3',
    fileRestore: 'ferry restore from a local file',
  };
  const res = { id: 's3', title: TITLES.s3, labels, sides, errors: [], activity: [], bucket: lab.bucket, prefix, ...Object.fromEntries(sides.map((s) => [s, []])) };
  const minBytes = ctx.workload.randomFileMiB * MiB;
  const tarIn = (d) => (fs.existsSync(d) ? fs.readdirSync(d).filter((f) => f.endsWith('.tar')).map((f) => path.join(d, f)) : []);
  const wipe = (d) => {
    fs.rmSync(d, { recursive: true, force: true });
    fs.mkdirSync(d, { recursive: true });
  };
  const ferryS3 = (args) => ({ cmd: BIN, args, env: lab.env() });
  let ref;
  try {
    // The reference bundle (untimed): what the raw upload sends and both restores read.
    wipe(storeDir);
    wipe(refDir);
    clearSourceLeftovers();
    log(`s3: writing the reference bundle (ferry backup ${CTR} --compress none -o ${refDir}); prefix ${lab.bucket}/${prefix}`);
    run(BIN, ['backup', CTR, '--compress', 'none', '-o', refDir, '--quiet']);
    [ref] = tarIn(refDir);
    if (!ref) throw new Error(`no bundle in ${refDir}`);
    res.refBytes = fs.statSync(ref).size;
    const specs = {
      s3Backup: {
        prepare: async () => {
          clearSourceLeftovers();
          await admin.clean(`${prefix}/backup`);
          run('sync', []);
        },
        spec: () => ferryS3(['backup', CTR, '--compress', 'none', '-o', lab.url(`${prefix}/backup`), '--json']),
        check: async (r) => {
          const j = JSON.parse(r.stdout.trim().split('\n').pop() || '{}');
          const objs = await admin.objects(`${prefix}/backup`);
          const obj = objs.find((o) => j.bundle?.endsWith(`/${path.posix.basename(o.key)}`));
          const left = await admin.uploads(`${prefix}/backup`);
          const problems = [];
          if (!obj) problems.push(`no object for ${j.bundle} under ${prefix}/backup (${objs.map((o) => o.key).join(', ') || 'none'})`);
          else if (obj.size < minBytes) problems.push(`the object holds only ${obj.size} bytes`);
          if (left.length) problems.push(`${left.length} multipart upload(s) left in progress`);
          return { info: { objectBytes: obj?.size, storedBytes: j.storedBytes, durationMs: j.durationMs, pausedMs: j.pausedMs, dataPaths: j.dataPaths }, problems };
        },
      },
      fileBackup: {
        prepare: () => {
          wipe(storeDir);
          clearSourceLeftovers();
          run('sync', []);
        },
        spec: () => ({ cmd: BIN, args: ['backup', CTR, '--compress', 'none', '-o', storeDir, '--json'] }),
        check: (r) => {
          const j = JSON.parse(r.stdout.trim().split('\n').pop() || '{}');
          const [file] = tarIn(storeDir);
          const bytes = file ? fs.statSync(file).size : 0;
          return { info: { fileBytes: bytes, durationMs: j.durationMs, pausedMs: j.pausedMs, dataPaths: j.dataPaths }, problems: bytes < minBytes ? [`the bundle holds only ${bytes} bytes`] : [] };
        },
      },
      rawUpload: {
        prepare: async () => {
          await admin.clean(`${prefix}/raw`);
          warmCache(ref);
        },
        spec: () => ({ cmd: process.execPath, args: [path.join(ROOT, 'bench', 's3-upload.mjs'), ref, rawKey], env: lab.env({ BENCH_S3_ENDPOINT: lab.endpoint, BENCH_S3_BUCKET: lab.bucket }) }),
        check: async (r) => {
          const j = JSON.parse(r.stdout.trim().split('\n').pop() || '{}');
          const left = await admin.uploads(`${prefix}/raw`);
          const problems = [];
          if (j.objectBytes !== res.refBytes) problems.push(`uploaded ${j.objectBytes} bytes of ${res.refBytes}`);
          if (left.length) problems.push(`${left.length} multipart upload(s) left in progress`);
          return { info: { uploadSeconds: round(j.seconds, 3), objectBytes: j.objectBytes, partMiB: j.partMiB, queueSize: j.queueSize }, problems };
        },
      },
      s3Restore: {
        prepare: async () => {
          if ((await admin.objects(`${prefix}/raw`)).length === 0) throw new Error(`no raw upload at ${rawKey} to restore from`);
          clearTarget({ base: false });
          run('sync', []);
        },
        spec: () => ferryS3(['restore', lab.url(rawKey), '--no-start', '--json', '-H', ENGINE_B]),
        check: (r) => ({ info: restoreInfo(r), problems: verifyTarget('s3Restore', CTR, ctx.workload, { verify: opts.verify }) }),
      },
      fileRestore: {
        prepare: () => {
          clearTarget({ base: false });
          run('sync', []);
        },
        spec: () => ({ cmd: BIN, args: ['restore', ref, '--no-start', '--json', '-H', ENGINE_B] }),
        check: (r) => ({ info: restoreInfo(r), problems: verifyTarget('fileRestore', CTR, ctx.workload, { verify: opts.verify }) }),
      },
    };
    for (let i = 0; i < opts.runs; i++) {
      // Each pair alternates its order from run to run; the raw upload sits between the two backups.
      const order = i % 2 === 0 ? ['s3Backup', 'rawUpload', 'fileBackup', 's3Restore', 'fileRestore'] : ['fileBackup', 'rawUpload', 's3Backup', 'fileRestore', 's3Restore'];
      for (const side of order) await measure(res, opts, i, side, { ...specs[side], trackRss: true });
    }
  } finally {
    clearSourceLeftovers();
    clearTarget({ base: false });
    fs.rmSync(dir, { recursive: true, force: true });
    try {
      await admin.clean(prefix);
      const objs = await admin.objects(prefix);
      const ups = await admin.uploads(prefix);
      res.leftInBucket = { objects: objs.length, uploads: ups.length };
      if (objs.length || ups.length) ctx.notes.add(`s3: ${objs.length} object(s) and ${ups.length} upload(s) still under ${lab.bucket}/${prefix} after the cleanup`);
      log(`s3: removed ${lab.bucket}/${prefix}: ${objs.length} object(s) and ${ups.length} multipart upload(s) left`);
    } catch (err) {
      ctx.notes.add(`s3: could not clean ${lab.bucket}/${prefix}: ${err.message}`);
    }
    admin.destroy();
  }
  return summariseS3(res);
}

/** The fields of a restore's --json result worth keeping. */
function restoreInfo(r) {
  try {
    const j = JSON.parse(r.stdout.trim().split('\n').pop());
    return { durationMs: j.durationMs, timings: j.timings, dataPaths: j.dataPaths };
  } catch {
    return {};
  }
}

/** The three comparisons of the S3 scenario (issue 23's targets) and ferry's peak RSS. */
function summariseS3(res) {
  const ok = (side) => res[side].filter((e) => e.code === 0 && !e.problems);
  const med = (side, f = (e) => e.seconds) => round(median(ok(side).map(f)), 3);
  const mbps = (bytes, s) => (bytes && s ? bytes / 1e6 / s : undefined);
  const row = (name, ferry, baseline, op, target, unit, ratio = ferry && baseline ? ferry / baseline : undefined) => ({
    name,
    ferry,
    baseline,
    unit,
    ratio: round(ratio, 3),
    op,
    target,
    pass: ratio !== undefined && (op === '≤' ? ratio <= target : ratio >= target),
  });
  const ferryUp = round(median(ok('s3Backup').map((e) => mbps(e.objectBytes, e.seconds))), 1);
  const rawUp = round(median(ok('rawUpload').map((e) => mbps(e.objectBytes, e.uploadSeconds))), 1);
  res.rows = [
    row('backup: to S3 vs to a local directory', med('s3Backup'), med('fileBackup'), '≤', 1.1, 's'),
    row('upload throughput: ferry\'s backup to S3 vs the raw upload of the same bytes', ferryUp, rawUp, '≥', 0.8, 'MB/s'),
    row('restore: from S3 vs from the local file (the same bytes)', med('s3Restore'), med('fileRestore'), '≤', 1.1, 's'),
  ];
  res.rawUploadWallSeconds = med('rawUpload');
  // The floor under the backup row: the raw upload of the same bytes alone (no engine, no bundle), as a whole process, over the local backup.
  res.rawOverFileBackup = res.rawUploadWallSeconds && med('fileBackup') ? round(res.rawUploadWallSeconds / med('fileBackup'), 3) : undefined;
  const peak = (side) => round(Math.max(0, ...res[side].map((e) => e.peakRssMB ?? 0)), 1) || undefined;
  res.peakRssMB = Object.fromEntries(res.sides.map((s) => [s, peak(s)]));
  const s3Peak = Math.max(res.peakRssMB.s3Backup ?? 0, res.peakRssMB.s3Restore ?? 0);
  res.rss = { peakMB: s3Peak || undefined, target: S3_RSS_TARGET_MB, pass: s3Peak > 0 && s3Peak <= S3_RSS_TARGET_MB };
  const cpuOf = (side, key) => round(median(res.activity.filter((a) => a.side === side && a[key] !== undefined).map((a) => a[key])), 2);
  res.cpu = Object.fromEntries(res.sides.map((s) => [s, { machine: cpuOf(s, 'machineCpuSeconds'), engines: cpuOf(s, 'engineCpuSeconds'), s3Server: cpuOf(s, 's3ServerCpuSeconds'), steal: cpuOf(s, 'stealCpuSeconds') }]));
  res.pass = !res.incomplete && res.rows.every((r) => r.pass) && res.rss.pass;
  for (const r of res.rows) log(`s3: ${r.name}: ferry ${fmt(r.ferry)} ${r.unit}, baseline ${fmt(r.baseline)} ${r.unit}, ratio ${fmt(r.ratio)} (target ${r.op} ${r.target}) ${r.pass ? 'PASS' : 'FAIL'}`);
  log(`s3: ferry's peak RSS against S3 ${fmt(res.rss.peakMB, 0)} MB (target ≤ ${S3_RSS_TARGET_MB}) ${res.rss.pass ? 'PASS' : 'FAIL'}`);
  return res;
}

// ------------------------------------------------------------------------------- reporting ---
function machineFacts() {
  const first = (cmd, args, stream = 'stdout') => {
    const r = run(cmd, args, { allowFail: true });
    return (r.code === 0 ? r[stream] || r.stdout || r.stderr : '').split('\n')[0].trim() || 'unknown';
  };
  const mem = /MemTotal:\s+(\d+)/.exec(fs.readFileSync('/proc/meminfo', 'utf8'));
  const cpu = /model name\s*:\s*(.+)/.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'));
  return {
    nproc: Number(first('nproc', [])),
    cpuModel: cpu ? cpu[1].trim() : os.cpus()[0]?.model,
    memoryGiB: mem ? round(Number(mem[1]) / 1024 / 1024, 1) : round(os.totalmem() / 2 ** 30, 1),
    kernel: os.release(),
    dockerClient: first('docker', ['version', '--format', '{{.Client.Version}}']),
    dockerEngineA: first('docker', ['-H', ENGINE_A, 'version', '--format', '{{.Server.Version}}']),
    dockerEngineB: first('docker', ['-H', ENGINE_B, 'version', '--format', '{{.Server.Version}}']),
    storageDriver: first('docker', ['-H', ENGINE_A, 'info', '--format', '{{.Driver}}']),
    engineKind: ENGINE_A === ENGINES.containerd ? 'containerd image store' : 'classic image store',
    node: process.version,
    zstd: first('zstd', ['--version']).replace(/^\*+\s*|\s*\*+$/g, ''),
    openssh: first('ssh', ['-V'], 'stderr'),
    ssh2: JSON.parse(fs.readFileSync(path.join(ROOT, 'node_modules', 'ssh2', 'package.json'), 'utf8')).version,
    ferry: JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')).version,
    s3Server: (() => {
      const v = first('radosgw', ['--version']);
      return v === 'unknown' ? undefined : `Ceph RGW (${v.replace(/\s*\(.*$/, '')})`;
    })(),
    image: PG,
    imageMB: round(Number(first('docker', ['-H', ENGINE_A, 'image', 'inspect', '-f', '{{.Size}}', PG])) / 1e6, 0),
  };
}

function renderMarkdown(report) {
  const { opts, facts, results, workload } = report;
  const L = [];
  L.push(`# ferry benchmark`);
  L.push('');
  L.push(
    `${report.startedAt} · ${opts.runs} run${opts.runs > 1 ? 's' : ''} per scenario (ferry and baseline alternating; medians) · image: ${PG}${facts.imageMB ? ` (${facts.imageMB} MB)` : ''} · volume: PostgreSQL 15 cluster + ${opts.sizeMiB} MiB random file` +
      (workload ? ` (${(workload.volumeBytes / MiB).toFixed(0)} MiB in all)` : '') +
      (opts.quick ? ' · **--quick smoke run**' : ''),
  );
  L.push('');
  const cmp = results.filter((r) => r.target !== undefined);
  if (cmp.length) {
    L.push('| scenario | ferry median s | baseline median s | ratio | target | pass/fail | ferry peak RSS MB |');
    L.push('|---|---:|---:|---:|---:|:---:|---:|');
    for (const r of cmp) {
      const verdict = r.crashed || r.incomplete ? 'ERROR' : `${r.pass ? 'PASS' : 'FAIL'}${r.errors.length ? ` (${r.errors.length} failed attempt${r.errors.length > 1 ? 's' : ''} retried)` : ''}`;
      L.push(`| ${r.title} | ${fmt(r.ferryMedian)} | ${fmt(r.baselineMedian)} | ${fmt(r.ratio)} | ≤ ${r.target.toFixed(2)} | ${verdict} | ${fmt(r.peakRssMB, 0)} |`);
    }
    L.push('');
    const rss = cmp.filter((r) => r.id !== 'ssh' && r.peakRssMB);
    if (rss.length) {
      const max = Math.max(...rss.map((r) => r.peakRssMB));
      L.push(`Peak RSS of the ferry process (target ≤ ${RSS_TARGET_MB} MB, ${opts.sizeMiB} MiB volume): ${max.toFixed(0)} MB, ${max <= RSS_TARGET_MB ? 'PASS' : 'FAIL'}. ` + `The ssh row's RSS is that of the ssh2 test script.`);
      L.push('');
    }
    for (const r of cmp.filter((x) => x.floors?.length)) {
      L.push(`Floors for ${r.title}, timed in the same run (what the data path alone needs, done by hand: through the engines, or with GNU tar on the hosts as ferry does where it is root there):`, '');
      L.push('| floor | median s | its ratio to the baseline |');
      L.push('|---|---:|---:|');
      for (const f of r.floors) L.push(`| ${f.name}: \`${f.command.replace(/\|/g, '\\|')}\` | ${fmt(f.medianSeconds)} | ${fmt(f.bestRatio)} |`);
      L.push('');
    }
    const withCpu = cmp.filter((r) => r.id !== 'ssh' && r.cpu?.ferry.machine !== undefined);
    if (withCpu.length) {
      L.push('CPU seconds per run (medians; 2 cores give 2 CPU s per second): the whole machine, of that the engines (dockerd with its docker-tar / docker-untar helpers), and the steal (CPU time the hypervisor gave to other guests meanwhile, counted in the machine column).', '');
      L.push('| scenario | ferry: machine | ferry: engines | ferry: steal | baseline: machine | baseline: engines | baseline: steal |');
      L.push('|---|---:|---:|---:|---:|---:|---:|');
      for (const r of withCpu) L.push(`| ${r.title} | ${fmt(r.cpu.ferry.machine)} | ${fmt(r.cpu.ferry.engines)} | ${fmt(r.cpu.ferry.steal)} | ${fmt(r.cpu.baseline.machine)} | ${fmt(r.cpu.baseline.engines)} | ${fmt(r.cpu.baseline.steal)} |`);
      L.push('');
    }
    const ssh = cmp.find((r) => r.id === 'ssh');
    if (ssh?.ferryMBps)
      L.push(`ssh throughput: ssh2 ${fmt(ssh.ferryMBps, 0)} MB/s (${facts.ssh2Cipher}), OpenSSH ${fmt(ssh.baselineMBps, 0)} MB/s (${facts.opensshCipher}).`, '');
  }
  const pre = results.find((r) => r.id === 'precopy');
  if (pre?.downtime) {
    L.push(`## ${pre.title}`, '');
    L.push('| | downtime median s (`downtimeMs`) | whole run median s |');
    L.push('|---|---:|---:|');
    L.push(`| ${pre.labels.ferry} | ${fmt(pre.downtime.ferry)} | ${fmt(pre.ferryMedian)} |`);
    L.push(`| ${pre.labels.baseline} | ${fmt(pre.downtime.baseline)} | ${fmt(pre.baselineMedian)} |`);
    for (const e of pre.ferry) if (e.precopy) L.push('', `pre-copy run ${e.run}: ${JSON.stringify(e.precopy)}`);
    for (const e of pre.ferry) if (e.frozenSteps) L.push('', `pre-copy run ${e.run}, the downtime's steps (ms since the stop): ${e.frozenSteps.map((x) => `${x.step} ${x.fromMs}-${x.toMs}`).join('; ')}`);
    L.push('');
    const paused = [pre.copy, pre.backup].filter((r) => r?.paused);
    if (paused.length) {
      L.push('| same workload and writer | source paused, median s (`pausedMs`) | whole run median s |');
      L.push('|---|---:|---:|');
      for (const r of paused) {
        L.push(`| ${r.labels.ferry} | ${fmt(r.paused.ferry)} | ${fmt(r.ferryMedian)} |`);
        L.push(`| ${r.labels.baseline} | ${fmt(r.paused.baseline)} | ${fmt(r.baselineMedian)} |`);
      }
      for (const r of paused) for (const e of r.ferry) if (e.precopy) L.push('', `${r.labels.ferry} run ${e.run}: ${JSON.stringify(e.precopy)}`);
      L.push('');
    }
  }
  const s3 = results.find((r) => r.id === 's3');
  if (s3) {
    L.push(`## ${s3.title}`, '');
    if (s3.crashed) L.push(`ERROR: ${s3.errors.join('; ')}`, '');
    if (s3.rows) {
      L.push(`Under \`${s3.bucket}/${s3.prefix}\` on ${facts.s3Server ?? 'the lab\'s S3 server'}; reference bundle ${fmt(s3.refBytes / 1e6, 0)} MB (\`--compress none\`). Medians of ${opts.runs} run${opts.runs > 1 ? 's' : ''}.`, '');
      L.push('| measurement | ferry | baseline | ratio | target | pass/fail |');
      L.push('|---|---:|---:|---:|---:|:---:|');
      const verdict = s3.incomplete ? 'ERROR' : null;
      for (const r of s3.rows) L.push(`| ${r.name} | ${fmt(r.ferry)} ${r.unit} | ${fmt(r.baseline)} ${r.unit} | ${fmt(r.ratio)} | ${r.op} ${r.target.toFixed(2)} | ${verdict ?? (r.pass ? 'PASS' : 'FAIL')} |`);
      L.push(`| ferry's peak RSS, backup to and restore from S3 | ${fmt(s3.rss.peakMB, 0)} MB | | | ≤ ${s3.rss.target} MB | ${verdict ?? (s3.rss.pass ? 'PASS' : 'FAIL')} |`);
      L.push('');
      L.push(`The raw upload took ${fmt(s3.rawUploadWallSeconds)} s as a whole process (node's start and the SDK's load included): ${fmt(s3.rawOverFileBackup)}× the backup to a local directory, the floor under the backup row's ratio on this server. Per side (medians): wall seconds, peak RSS, and CPU seconds of the whole machine, of the engines (dockerd) and of the S3 server (radosgw, ceph-osd, ceph-mon), and the steal:`, '');
      L.push('| side | wall s | peak RSS MB | machine CPU s | engines CPU s | S3 server CPU s | steal s |');
      L.push('|---|---:|---:|---:|---:|---:|---:|');
      for (const side of s3.sides) {
        const secs = median(s3[side].filter((e) => e.code === 0 && !e.problems).map((e) => e.seconds));
        const c = s3.cpu[side];
        L.push(`| ${s3.labels[side]} | ${fmt(secs)} | ${fmt(s3.peakRssMB[side], 0)} | ${fmt(c.machine)} | ${fmt(c.engines)} | ${fmt(c.s3Server)} | ${fmt(c.steal)} |`);
      }
      L.push('');
      if (s3.leftInBucket) L.push(`Left under the prefix after the cleanup: ${s3.leftInBucket.objects} object(s), ${s3.leftInBucket.uploads} multipart upload(s).`, '');
    }
  }
  const comp = results.find((r) => r.id === 'compress');
  if (comp) {
    L.push(`## ${comp.title}`);
    L.push('');
    if (comp.crashed) L.push(`ERROR: ${comp.errors.join('; ')}`, '');
    else {
      L.push(`Input: the volume as a tar (\`docker cp ${CTR}:${PGDATA}/. -\`), ${(comp.inputBytes / 1e6).toFixed(0)} MB, read from the page cache, output to /dev/null. Most of it is the random file (incompressible): the ratio reflects the PostgreSQL files only.`);
      L.push('');
      L.push('| codec | median s | MB/s | ratio (out/in) |');
      L.push('|---|---:|---:|---:|');
      for (const c of comp.codecs) L.push(`| ${c.codec} | ${fmt(c.medianSeconds)} | ${fmt(c.mbPerSecond, 0)} | ${fmt(c.ratio, 4)} |`);
      L.push('');
    }
  }
  L.push('## Runs');
  L.push('');
  for (const r of results) {
    if (r.id === 'compress') {
      for (const c of r.codecs ?? []) L.push(`- ${c.codec}: ${c.runs.map((e) => (e.code === 0 ? e.seconds.toFixed(2) : `exit ${e.code}`)).join(', ')} s`);
    } else if (r.ferry) {
      const list = (xs) => xs.map((e) => (e.code === 0 && !e.problems ? e.seconds.toFixed(2) : `(failed ${e.seconds.toFixed(2)})`)).join(', ');
      L.push(`- ${r.id}: ${r.labels?.ferry ?? 'ferry'} ${list(r.ferry)} s; ${r.labels?.baseline ?? 'baseline'} ${list(r.baseline)} s`);
    } else if (r.sides) {
      const list = (xs) => xs.map((e) => (e.code === 0 && !e.problems ? e.seconds.toFixed(2) : `(failed ${e.seconds.toFixed(2)})`)).join(', ');
      L.push(`- ${r.id}: ${r.sides.map((side) => `${r.labels[side]} ${list(r[side])} s`).join('; ')}`);
    }
    for (const e of r.errors ?? []) L.push(`  - failed: ${e}`);
  }
  L.push('');
  L.push('## Commands');
  L.push('');
  L.push(`- backup — ferry: \`bin/ferry.js backup ${CTR} --compress none -o <file>\`; baseline: \`docker commit ${CTR} ${SNAP} && docker save -o <file> ${SNAP} && docker cp ${CTR}:${PGDATA} - > <file2>\``);
  L.push(`- migrate — ferry: \`HOME=<sshHome> bin/ferry.js migrate ${CTR} --to ssh://newhost --no-start\`; baseline: \`docker commit ${CTR} ${SNAP}; docker save ${SNAP} | ssh newhost docker load; ssh newhost docker volume create ${VOL}; ssh newhost docker create --name ${HOLDER} -v ${VOL}:/data ${SNAP}; docker cp ${CTR}:${PGDATA}/. - | ssh newhost docker cp - ${HOLDER}:/data\` (OpenSSH to the lab sshd, whose sessions reach engine B)`);
  L.push(`- migrate (empty target): before each run engine B loses the container, volume, snapshot images and ${PG}; second migrate: B keeps ${PG}`);
  L.push(`- ssh — OpenSSH: \`ssh newhost 'cat > /dev/null' < <file>\`; ssh2: \`node bench/ssh2-cat.mjs <file>\` (exec \`cat > /dev/null\`, cipher aes128-gcm@openssh.com)`);
  if (results.some((r) => r.id === 's3'))
    L.push(
      `- s3 — \`bin/ferry.js backup ${CTR} --compress none -o s3+http://<endpoint>/<bucket>/<prefix>/backup --json\` vs \`-o <directory>\`; raw upload: \`node bench/s3-upload.mjs <reference bundle> <prefix>/raw/ferry-bench-pg-raw.tar\` (lib-storage \`Upload\`, 8 MiB parts, 4 at once); \`bin/ferry.js restore s3+http://…/raw/ferry-bench-pg-raw.tar --no-start -H <engine B>\` vs \`restore <reference bundle> --no-start -H <engine B>\`, engine B emptied before each`,
    );
  L.push('');
  L.push('## Machine');
  L.push('');
  L.push(`- nproc ${facts.nproc}; CPU ${facts.cpuModel}; memory ${facts.memoryGiB} GiB; kernel ${facts.kernel}`);
  L.push(`- docker ${facts.dockerClient} (client), engine A ${facts.dockerEngineA}, engine B ${facts.dockerEngineB}, storage driver ${facts.storageDriver} (${facts.engineKind})`);
  L.push(`- node ${facts.node}; ${facts.zstd}; ${facts.openssh}; ssh2 ${facts.ssh2}; ferry ${facts.ferry}`);
  if (facts.opensshCipher) L.push(`- negotiated ciphers: OpenSSH ${facts.opensshCipher}; ssh2 ${facts.ssh2Cipher ?? '—'}`);
  L.push(`- load average at start ${report.loadStart.join(' / ')}, at end ${report.loadEnd.join(' / ')}`);
  // A measurement is "disturbed" when other developers' processes used more than 10% of one core meanwhile.
  const all = results.flatMap((r) => (r.activity ?? []).map((a) => ({ ...a, id: r.id })));
  const busy = all.filter((a) => a.foreignCpuSeconds > 0.1 * a.seconds);
  const foreign = [...new Set(busy.flatMap((a) => a.foreign))];
  const cpu = busy.reduce((n, a) => n + a.foreignCpuSeconds, 0);
  L.push(
    busy.length
      ? `- **interference**: during ${busy.length} of ${all.length} measurements other work on the machine (${foreign.join(', ')}) used more than 10% of a core (${cpu.toFixed(1)} CPU s in all, not counting the engine work it caused): ${busy.map((a) => `${a.id}/${a.side}#${a.run} ${a.foreignCpuSeconds}s`).join(', ')}. Those numbers are noisy.`
      : `- no other developer's process (vitest, ferry, tsc, npm) used more than 10% of a core during any measurement (${all.length} measured)`,
  );
  for (const n of report.notes) L.push(`- note: ${n}`);
  L.push('');
  return L.join('\n');
}

// ------------------------------------------------------------------------------------ main ---
async function cleanupAll(opts) {
  log('cleaning up');
  try {
    clearSourceLeftovers();
    clearTarget({ base: false });
    if (!exists(ENGINE_B, 'image', PG)) ensurePgImage();
    if (opts.clean) {
      log(`--clean: removing the workload (${CTR}, ${VOL}) from engine A`);
      dk(ENGINE_A, ['rm', '-f', '-v', CTR], { allowFail: true });
      dk(ENGINE_A, ['volume', 'rm', '-f', VOL], { allowFail: true });
    }
  } catch (err) {
    log(`cleanup: ${err.message}`);
  }
  fs.rmSync(WORK, { recursive: true, force: true });
}

async function main() {
  const opts = parseOptions(process.argv.slice(2));
  PG = PG_IMAGES[opts.image];
  ENGINE_A = ENGINES[opts.engine];
  PG_FLAVOR = opts.image;
  if (!fs.existsSync(path.join(ROOT, 'dist', 'cli', 'main.js'))) {
    log('dist/ is missing: run `npm run build` first (or use `npm run bench`)');
    process.exit(1);
  }
  if (process.getuid?.() !== 0) log('warning: not root; the lab setup needs root');
  let interrupted = false;
  const onSignal = (sig) => {
    if (interrupted) return;
    interrupted = true;
    log(`${sig}: stopping`);
    for (const c of live) c.kill('SIGTERM');
    setTimeout(async () => {
      await cleanupAll(opts);
      process.exit(130);
    }, 500);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const report = {
    startedAt: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
    opts,
    loadStart: os.loadavg().map((x) => round(x, 2)),
    facts: {},
    results: [],
    notes: new Set(),
  };
  fs.rmSync(path.join(OUT, 'logs'), { recursive: true, force: true });
  fs.mkdirSync(OUT, { recursive: true });
  fs.rmSync(WORK, { recursive: true, force: true });
  fs.mkdirSync(WORK, { recursive: true });
  log(`scenarios: ${opts.scenarios.join(', ')}; ${opts.runs} run(s) each; ${opts.sizeMiB} MiB volume`);
  let failed = false;
  try {
    setupLab();
    report.facts = machineFacts();
    const needsWorkload = opts.scenarios.some((s) => s !== 'ssh');
    const ctx = { opts, facts: report.facts, notes: report.notes, ssh: makeSshHome() };
    if (needsWorkload) {
      clearSourceLeftovers();
      clearTarget({ base: false });
      ctx.workload = report.workload = await ensureWorkload(opts.sizeMiB, opts);
    }
    const fns = { backup: scenarioBackup, migrate: scenarioMigrate, migrate2: scenarioMigrate2, compress: scenarioCompress, ssh: scenarioSsh, precopy: scenarioPrecopy, s3: scenarioS3 };
    for (const s of opts.scenarios) {
      if (interrupted) break;
      log(`=== ${TITLES[s]}`);
      try {
        const r = await fns[s](opts, ctx);
        if (r.incomplete || (s === 'compress' && r.errors.length)) failed = true;
        report.results.push(r);
      } catch (err) {
        if (interrupted) break;
        failed = true;
        log(`${s}: ERROR ${err.stack ?? err}`);
        report.results.push({ id: s, title: TITLES[s], target: TARGETS[s], crashed: true, errors: [String(err.message ?? err)] });
      }
    }
  } catch (err) {
    failed = true;
    log(`ERROR ${err.stack ?? err}`);
    report.notes.add(`setup failed: ${err.message ?? err}`);
  } finally {
    if (!interrupted) await cleanupAll(opts);
  }
  if (interrupted) return;
  report.loadEnd = os.loadavg().map((x) => round(x, 2));
  report.finishedAt = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
  report.notes = [...report.notes];
  const md = renderMarkdown(report);
  const stem = opts.engine === 'docker20' ? 'results' : `results-${opts.engine}`;
  fs.writeFileSync(path.join(OUT, `${stem}.md`), md);
  fs.writeFileSync(path.join(OUT, `${stem}.json`), `${JSON.stringify(report, null, 2)}\n`);
  process.stdout.write(`${md}\n`);
  log(`wrote ${path.relative(process.cwd(), path.join(OUT, `${stem}.md`))} and ${stem}.json`);
  process.exitCode = failed ? 1 : 0;
}

await main();
