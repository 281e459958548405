/**
 * A small record of what ferry is doing on an engine right now that it must undo (a container
 * paused or stopped for a snapshot, the snapshot image it committed), kept on local disk so that
 * a run killed with SIGKILL leaves a trace: the next run on that engine sees that the ferry
 * process that did it is gone, and finishes its undo (ops/steps/recover.ts).
 */
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { homedir, hostname } from 'node:os';
import path from 'node:path';

export interface QuiesceRecord {
  engine: string;
  /** The container's id; for a snapshot, the image's id. */
  containerId: string;
  /** The container's name; for a snapshot, the image's reference. */
  name: string;
  action: 'paused' | 'stopped' | 'snapshot';
  pid: number;
  /** When that process started (processStart), where it could be read. */
  started?: string;
  host: string;
  at: string;
}

export function stateFile(env: NodeJS.ProcessEnv = process.env): string {
  if (env.FERRY_STATE_DIR) return path.join(env.FERRY_STATE_DIR, 'quiesced.json');
  const base = env.XDG_STATE_HOME || path.join(env.HOME || homedir(), '.local', 'state');
  return path.join(base, 'ferry', 'quiesced.json');
}

function read(file: string): QuiesceRecord[] {
  try {
    const v = JSON.parse(readFileSync(file, 'utf8')) as unknown;
    return Array.isArray(v) ? (v as QuiesceRecord[]) : [];
  } catch {
    return [];
  }
}

function write(file: string, recs: QuiesceRecord[]) {
  mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(recs, null, 2) + '\n', { mode: 0o600 });
  renameSync(tmp, file);
}

/**
 * When process `pid` started, as the kernel counts it (Linux: the 22nd field of /proc/<pid>/stat,
 * clock ticks since boot); undefined where that cannot be read. With the pid it names one process:
 * pids are reused (pid_max is 32768 on many hosts), so a record's pid alone may name another.
 */
export function processStart(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // the command name (field 2) may hold spaces and parentheses: the fields after it follow the last ')'
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return fields[19]; // field 22, fields[0] being field 3
  } catch {
    return undefined;
  }
}

let selfStart: string | undefined | null = null;
/** What a record says of the run that writes it: its process (pid and start time) and host. */
export function me(): { pid: number; started?: string; host: string } {
  if (selfStart === null) selfStart = processStart(process.pid);
  return { pid: process.pid, ...(selfStart !== undefined ? { started: selfStart } : {}), host: hostname() };
}

/**
 * Is the process that wrote a record still running? `started`: its start time as recorded (where
 * it was): a process now under that pid that started at another time is another process, and the
 * recorded one is gone.
 */
export function alive(pid: number, started?: string): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  if (started === undefined) return true;
  const now = processStart(pid);
  return now === undefined || now === started;
}

/** A run recorded by `host`/`pid` may still be going: its process is alive here, or it ran on another host. */
export function mayBeRunning(r: { host: string; pid: number; started?: string }): boolean {
  return r.host !== hostname() || r.pid === process.pid || alive(r.pid, r.started);
}

export class QuiesceJournal {
  constructor(private readonly file = stateFile()) {}

  add(r: Omit<QuiesceRecord, 'pid' | 'host' | 'at'>): void {
    try {
      const recs = read(this.file).filter((x) => !(x.engine === r.engine && x.containerId === r.containerId));
      recs.push({ ...r, ...me(), at: new Date().toISOString() });
      write(this.file, recs);
    } catch {
      /* advisory only: never fail a backup over the journal */
    }
  }

  remove(engine: string, containerId: string): void {
    try {
      const recs = read(this.file);
      const left = recs.filter((x) => !(x.engine === engine && x.containerId === containerId && x.pid === process.pid));
      if (left.length !== recs.length) write(this.file, left);
    } catch {
      /* advisory only */
    }
  }

  /** Records left by ferry runs on this host that died before putting the container back. */
  stale(engine: string): QuiesceRecord[] {
    return read(this.file).filter(
      (x) => x.engine === engine && x.host === hostname() && x.pid !== process.pid && !alive(x.pid, x.started),
    );
  }

  /**
   * Records of runs that may still be going: alive on this host, or on another host (where
   * ferry cannot tell). What they name is theirs: `ferry clean` leaves it alone.
   */
  active(engine: string): QuiesceRecord[] {
    return read(this.file).filter((x) => x.engine === engine && mayBeRunning(x));
  }

  forget(engine: string, containerId: string): void {
    try {
      write(
        this.file,
        read(this.file).filter((x) => !(x.engine === engine && x.containerId === containerId)),
      );
    } catch {
      /* advisory only */
    }
  }
}

export interface HoldRecord {
  engine: string;
  containerId: string;
  name: string;
  pid: number;
  /** When that process started (processStart), where it could be read. */
  started?: string;
  host: string;
  at: string;
}

/**
 * One ferry run at a time per container: a run that pauses, stops or snapshots a container holds
 * it, with a file made exclusively (O_EXCL) beside the journal; a second run finds it taken. A
 * hold whose run is gone (its process no longer exists on this host) is taken over.
 */
export class ContainerHolds {
  constructor(private readonly dir = path.join(path.dirname(stateFile()), 'holds')) {}

  private file(engine: string, containerId: string): string {
    const e = createHash('sha256').update(engine).digest('hex').slice(0, 16);
    return path.join(this.dir, `${e}-${containerId.replace(/[^0-9a-zA-Z_.-]/g, '_')}.json`);
  }

  /**
   * Take the hold: undefined when taken, else the record of the live run that holds it. Where the
   * state directory cannot be written (a read-only home), the run goes on unheld, as it did
   * before holds existed: the hold is a guard, never a reason for a backup to fail.
   */
  take(r: Pick<HoldRecord, 'engine' | 'containerId' | 'name'>): HoldRecord | undefined {
    const file = this.file(r.engine, r.containerId);
    try {
      mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    } catch {
      return undefined;
    }
    for (let attempt = 0; ; attempt++) {
      try {
        const rec: HoldRecord = { ...r, ...me(), at: new Date().toISOString() };
        writeFileSync(file, JSON.stringify(rec) + '\n', { flag: 'wx', mode: 0o600 });
        return undefined;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') return undefined;
      }
      let held: HoldRecord | undefined;
      try {
        held = JSON.parse(readFileSync(file, 'utf8')) as HoldRecord;
      } catch {
        held = undefined; // being written, or torn: look again
      }
      if (held && (held.host !== hostname() || alive(held.pid, held.started))) return held;
      if (attempt >= 3) return held ?? { ...r, pid: 0, host: hostname(), at: '' };
      // Its run is gone: take it over.
      try {
        unlinkSync(file);
      } catch {
        /* another run took it over first */
      }
    }
  }

  release(engine: string, containerId: string): void {
    const file = this.file(engine, containerId);
    try {
      const held = JSON.parse(readFileSync(file, 'utf8')) as HoldRecord;
      if (held.pid === process.pid && held.host === hostname()) unlinkSync(file);
    } catch {
      /* not held, or not by this run */
    }
  }
}

/**
 * An --on-conflict replace in progress on an engine (ops/steps/replace.ts): what a run killed
 * with SIGKILL leaves for the next run to put right. `staging`: the volumes the new data is
 * written to; `aside`: the old containers stopped and renamed aside (put back unless the run got
 * to `committing`); `created`: the new containers, removed when the old are put back.
 */
export interface ReplaceRecord {
  engine: string;
  run: string;
  phase: 'staging' | 'aside' | 'committing';
  staging: string[];
  aside: { name: string; aside: string; id: string; running: boolean; paused: boolean }[];
  created: string[];
  /** From `committing` on: everything needed to finish the commit, and how far it got. */
  commit?: ReplaceCommit;
  pid: number;
  /** When that process started (processStart), where it could be read. */
  started?: string;
  host: string;
  at: string;
}

/**
 * How to finish an --on-conflict replace once its old containers go (ops/steps/replace.ts,
 * finishCommit), written before the first of them is removed: a run killed in the commit is
 * rolled forward from it by the next run on that engine. Every step is done again safely.
 */
export interface ReplaceCommit {
  /** When the commit began: a container under a new one's name made after this is the commit's own. */
  at: string;
  /** The new containers that ran on the staging volumes and passed their watch (ids). */
  trial: string[];
  /** Each real volume to make again (with its settings) and fill from its staging volume. */
  volumes: {
    real: string;
    staging: string;
    driver?: string;
    driverOpts?: Record<string, string>;
    labels?: Record<string, string>;
  }[];
  /** The new containers on the real volumes, in the order they are created, as ferry sends them. */
  containers: {
    name: string;
    /** The create body (POST /containers/create), volumes under their real names. */
    body: Record<string, unknown>;
    /** Networks joined after the create (engines before API 1.44 take one at create). */
    endpoints: { network: string; config: Record<string, unknown> }[];
    start: boolean;
    pause: boolean;
    /**
     * Its anonymous volumes' data: the volume its trial had at each destination (kept when the
     * trial was removed), moved into the one the engine makes for it.
     */
    adopt: { destination: string; volume: string }[];
  }[];
  /** The steps done: `old`, `trial`, `volume:<real>`, `create:<name>`, `start:<name>`. */
  done: string[];
  /** The id of each new container created on the real volumes, by name. */
  made: Record<string, string>;
}

/** Where the replace journal is kept (beside quiesced.json). */
export function replaceJournalFile(): string {
  return path.join(path.dirname(stateFile()), 'replacing.json');
}

export class ReplaceJournal {
  constructor(private readonly file = replaceJournalFile()) {}

  private all(): ReplaceRecord[] {
    try {
      const v = JSON.parse(readFileSync(this.file, 'utf8')) as unknown;
      return Array.isArray(v) ? (v as ReplaceRecord[]) : [];
    } catch {
      return [];
    }
  }

  private save(recs: ReplaceRecord[]): void {
    try {
      mkdirSync(path.dirname(this.file), { recursive: true, mode: 0o700 });
      const tmp = `${this.file}.${process.pid}.tmp`;
      writeFileSync(tmp, JSON.stringify(recs, null, 2) + '\n', { mode: 0o600 });
      renameSync(tmp, this.file);
    } catch {
      /* advisory only: the staging volumes and the aside names still say what they are */
    }
  }

  /** Record (or update) this run's replace on `engine`. */
  put(r: Omit<ReplaceRecord, 'pid' | 'host' | 'at'>): void {
    const recs = this.all().filter((x) => !(x.engine === r.engine && x.run === r.run));
    recs.push({ ...r, ...me(), at: new Date().toISOString() });
    this.save(recs);
  }

  /** Update a record another (dead) run left, as its roll-forward goes: it is this run's from now on. */
  take(r: ReplaceRecord): void {
    this.put(r);
  }

  /**
   * Take the right to put right (or finish) the dead run `run`'s replace: a file made exclusively
   * beside the journal, so that two ferry runs starting at once do not both work on it. Returns
   * its release, or undefined while a live run holds it. One whose run is gone is taken over.
   */
  claim(engine: string, run: string): (() => void) | undefined {
    const e = createHash('sha256').update(engine).digest('hex').slice(0, 16);
    const file = `${this.file}.${e}-${run.replace(/[^0-9a-zA-Z_.-]/g, '_')}.claim`;
    const release = () => {
      try {
        unlinkSync(file);
      } catch {
        /* gone already */
      }
    };
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
        const self = me();
        writeFileSync(file, `${self.pid}${self.started ? ` ${self.started}` : ''}\n`, { flag: 'wx', mode: 0o600 });
        return release;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') return release; // advisory: go on unclaimed
      }
      let pid = 0;
      let started: string | undefined;
      try {
        const [p, s] = readFileSync(file, 'utf8').trim().split(' ');
        pid = Number(p);
        started = s || undefined;
      } catch {
        /* being written: look again */
      }
      if (pid && alive(pid, started)) return undefined;
      release(); // its run is gone: take it over
    }
    return undefined;
  }

  /** The replace of `run` on `engine` is over (done, or put back). */
  drop(engine: string, run: string): void {
    const recs = this.all();
    const left = recs.filter((x) => !(x.engine === engine && x.run === run));
    if (left.length !== recs.length) this.save(left);
  }

  /** Replaces left by runs on this host that died before finishing or putting back. */
  stale(engine: string): ReplaceRecord[] {
    return this.all().filter(
      (x) => x.engine === engine && x.host === hostname() && x.pid !== process.pid && !alive(x.pid, x.started),
    );
  }
}

/** One object a restore or migration made on an engine, that its rollback would remove. */
export interface MadeObject {
  kind: 'container' | 'volume' | 'network' | 'image';
  /** Its name (an image: its reference). */
  name: string;
  /** A container's id, once the engine gave it. */
  id?: string;
}

/**
 * What a restore or migration made on an engine and would remove on a failure, until its point
 * of no return (the new containers started: ops/steps/recreate.ts, Undo): a run killed with
 * SIGKILL leaves half-filled volumes, created containers, loaded images and networks that the
 * next run on that engine removes (ops/steps/recover.ts).
 */
export interface MadeRecord {
  engine: string;
  run: string;
  made: MadeObject[];
  pid: number;
  /** When that process started (processStart), where it could be read. */
  started?: string;
  host: string;
  at: string;
}

export class MadeJournal {
  /**
   * One file per run (`made/<engine>-<run>.json`): only its run writes it, and a recovery only
   * removes it, so that runs side by side never write back an older copy of each other's records.
   */
  constructor(private readonly dir = path.join(path.dirname(stateFile()), 'made')) {}

  private file(engine: string, run: string): string {
    const e = createHash('sha256').update(engine).digest('hex').slice(0, 16);
    return path.join(this.dir, `${e}-${run.replace(/[^0-9a-zA-Z_.-]/g, '_')}.json`);
  }

  private read(file: string): MadeRecord | undefined {
    try {
      return JSON.parse(readFileSync(file, 'utf8')) as MadeRecord;
    } catch {
      return undefined;
    }
  }

  /** Record that this run made `obj` on `engine` (a container already recorded gets its id). */
  add(engine: string, run: string, obj: MadeObject): void {
    try {
      const file = this.file(engine, run);
      const rec = this.read(file) ?? {
        engine,
        run,
        made: [],
        ...me(),
        at: new Date().toISOString(),
      };
      const i = rec.made.findIndex((m) => m.kind === obj.kind && m.name === obj.name);
      if (i >= 0) rec.made[i] = obj;
      else rec.made.push(obj);
      mkdirSync(this.dir, { recursive: true, mode: 0o700 });
      const tmp = `${file}.${process.pid}.tmp`;
      writeFileSync(tmp, JSON.stringify(rec, null, 2) + '\n', { mode: 0o600 });
      renameSync(tmp, file);
    } catch {
      /* advisory only: never fail a restore over the journal */
    }
  }

  /** What run `run` made on `engine` is no longer its to remove (committed, or rolled back). */
  drop(engine: string, run: string): void {
    try {
      unlinkSync(this.file(engine, run));
    } catch {
      /* nothing recorded, or already gone */
    }
  }

  /** Records left by runs on this host that died before their point of no return. */
  stale(engine: string): MadeRecord[] {
    return this.all().filter(
      (x) => x.engine === engine && x.host === hostname() && x.pid !== process.pid && !alive(x.pid, x.started),
    );
  }

  /** Records of runs that may still be going (alive here, or on another host): `ferry clean` leaves what they made. */
  active(engine: string): MadeRecord[] {
    return this.all().filter((x) => x.engine === engine && mayBeRunning(x));
  }

  private all(): MadeRecord[] {
    let names: string[];
    try {
      names = readdirSync(this.dir).filter((n) => n.endsWith('.json'));
    } catch {
      return [];
    }
    return names.map((n) => this.read(path.join(this.dir, n))).filter((x): x is MadeRecord => !!x);
  }
}
