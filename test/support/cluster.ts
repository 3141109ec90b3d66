import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * Freezing a whole PostgreSQL cluster, as a hung host or a stalled disk would: SIGSTOP of its
 * postmaster and of every process it forked (backends, checkpointer, walwriter…), SIGCONT to thaw.
 */

/** The postmaster of the cluster in `dataDir` and every process it forked. */
export function clusterPids(dataDir: string): number[] {
  const postmaster = Number(readFileSync(join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
  const children = readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .filter((pid) => {
      try {
        // /proc/<pid>/stat: "pid (comm) state ppid …"; comm may hold spaces, so split after ")".
        const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
        return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === postmaster;
      } catch {
        return false;
      }
    })
    .map(Number);
  return [postmaster, ...children];
}

/** SIGSTOPs every process of the cluster in `dataDir`; returns their pids, for thawCluster. */
export function freezeCluster(dataDir: string): number[] {
  const pids = clusterPids(dataDir);
  for (const pid of pids) process.kill(pid, 'SIGSTOP');
  return pids;
}

/** SIGCONTs the processes freezeCluster stopped; one gone already is skipped. */
export function thawCluster(pids: number[]): void {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGCONT');
    } catch {
      // gone already
    }
  }
}
