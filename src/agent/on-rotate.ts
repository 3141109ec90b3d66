import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import type { AgentLog } from './agent-log.js';
import type { OnRotate } from './config.js';

/** The broker's token is the agent's, not the reloaded command's. */
const WITHHELD = ['CREDBROKER_TOKEN', 'VAULT_TOKEN'];

/**
 * Tells the application its files changed: a signal to the pid in `pid_file`, or a command run to
 * its end. A failure is logged, not thrown: the new files are in place either way.
 */
export async function runOnRotate(action: OnRotate | undefined, log: AgentLog): Promise<void> {
  if (!action) return;
  if ('signal' in action) {
    try {
      const pid = Number.parseInt((await readFile(action.pid_file, 'utf8')).trim(), 10);
      if (!Number.isInteger(pid) || pid <= 0) throw new Error(`no pid in ${action.pid_file}`);
      process.kill(pid, action.signal);
      log(`on_rotate: sent ${action.signal} to ${pid}`);
    } catch (err) {
      log(
        `on_rotate: cannot signal the pid in ${action.pid_file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
      );
    }
    return;
  }
  const [command, ...args] = action.command as [string, ...string[]];
  const env = { ...process.env };
  for (const name of WITHHELD) delete env[name];
  const status = await new Promise<string>((resolve) => {
    const child = spawn(command, args, { stdio: 'inherit', env });
    child.once('error', (err: NodeJS.ErrnoException) => resolve(`cannot run ${command}: ${err.code ?? err.message}`));
    child.once('exit', (code, signal) => resolve(code === 0 ? '' : `${command} exited with ${code ?? signal}`));
  });
  log(status ? `on_rotate: ${status}` : `on_rotate: ran ${command}`);
}
