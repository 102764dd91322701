import { spawn, type ChildProcess } from 'node:child_process';

/**
 * Worker processes (`src/cli.ts worker`) a test starts and may kill, pause or let run; `stopAll()` ends every
 * one still alive (resumed first if paused, then SIGKILL), for the test's afterAll.
 */
export function workerProcesses(envOf: () => NodeJS.ProcessEnv) {
  const children = new Set<ChildProcess>();
  return {
    spawn(extraEnv: Record<string, string> = {}): ChildProcess {
      const w = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'worker'], { env: { ...envOf(), ...extraEnv }, stdio: 'ignore' });
      children.add(w);
      w.once('exit', () => children.delete(w));
      return w;
    },
    /**
     * Starts `count` workers; `killEvery(ms, times)` then kills the oldest with SIGKILL every `ms` and starts
     * another, `times` times; `stop()` ends the killing (the workers run on until stopAll).
     */
    rolling(count: number) {
      const alive: ChildProcess[] = [];
      for (let i = 0; i < count; i++) alive.push(this.spawn());
      let kills = 0;
      let timer: NodeJS.Timeout | undefined;
      return {
        killEvery: (everyMs: number, times: number) => {
          timer = setInterval(() => {
            const victim = alive.shift();
            if (!victim || kills >= times) return;
            victim.kill('SIGKILL');
            kills++;
            alive.push(this.spawn());
          }, everyMs);
        },
        kills: () => kills,
        stop: () => clearInterval(timer),
      };
    },
    async stopAll(): Promise<void> {
      await Promise.all([...children].map((c) => new Promise<void>((resolve) => {
        if (c.exitCode !== null || c.signalCode !== null) return resolve();
        c.once('exit', () => resolve());
        c.kill('SIGCONT');
        c.kill('SIGKILL');
      })));
    },
  };
}
