/**
 * The journals name the run that wrote a record by its pid and its process's start time
 * (src/util/state.ts): pids are reused (pid_max is 32768 on many hosts), and a killed run whose
 * pid another process took since must still count as dead, so that the next run finishes its undo.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { alive, me, processStart, QuiesceJournal } from '../../src/util/state.js';

describe('a record names one process: its pid and when it started', () => {
  it('this process is alive under its own start time, and not under another', () => {
    const self = me();
    expect(self.pid).toBe(process.pid);
    expect(self.started).toMatch(/^\d+$/);
    expect(alive(process.pid, self.started)).toBe(true);
    expect(alive(process.pid)).toBe(true); // a record without one: the pid alone
    expect(alive(process.pid, String(Number(self.started) + 1))).toBe(false);
  });

  it('a process that ended is not alive', async () => {
    const child = spawn('sleep', ['30']);
    const started = processStart(child.pid!);
    expect(started).toMatch(/^\d+$/);
    expect(alive(child.pid!, started)).toBe(true);
    child.kill('SIGKILL');
    await new Promise((r) => child.on('close', r));
    expect(alive(child.pid!, started)).toBe(false);
  });

  it('a run whose pid another process has taken since is a dead run: its record is stale', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'ferry-pid-reuse-'));
    const other = spawn('sleep', ['30']); // the process that now has the dead run's pid
    try {
      const file = path.join(dir, 'quiesced.json');
      const rec = {
        engine: 'unix:///e.sock',
        containerId: 'c1',
        name: 'web',
        action: 'paused',
        pid: other.pid!,
        started: String(Number(processStart(other.pid!)) - 1),
        host: hostname(),
        at: new Date().toISOString(),
      };
      writeFileSync(file, JSON.stringify([rec]));
      const journal = new QuiesceJournal(file);
      expect(journal.stale('unix:///e.sock').map((r) => r.containerId)).toEqual(['c1']);
      expect(journal.active('unix:///e.sock')).toEqual([]);
      // the same record without a start time (written before ferry kept one): the pid alone says alive
      writeFileSync(file, JSON.stringify([{ ...rec, started: undefined }]));
      expect(journal.stale('unix:///e.sock')).toEqual([]);
    } finally {
      other.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
