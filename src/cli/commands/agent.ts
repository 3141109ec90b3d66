import type { Command } from 'commander';

interface AgentOptions {
  config: string;
  once?: boolean;
}

/** `credbroker agent`: writes leased credentials to files for a workload (init container or sidecar). */
export function addAgentCommand(program: Command): void {
  program
    .command('agent')
    .description(
      'Lease credentials and write them to files: with --once (an init container) write and exit, leaving the ' +
        'leases alive; otherwise (a sidecar) adopt them, renew, rotate before max TTL and revoke on SIGTERM.',
    )
    .requiredOption('--config <file>', 'the agent config (YAML): broker, auth, leases and their files')
    .option('--once', 'write every file and exit 0, leaving the leases alive (for an init container)')
    .action(async (opts: AgentOptions) => {
      // Loaded here: the agent (the SDK, Handlebars) is for this command, not for every CLI start.
      const [{ stderrLog }, { loadAgentConfig }, { runAgent }] = await Promise.all([
        import('../../agent/agent-log.js'),
        import('../../agent/config.js'),
        import('../../agent/runner.js'),
      ]);
      const config = loadAgentConfig(opts.config);
      const code = await runAgent(config, { once: opts.once === true, log: stderrLog });
      process.exit(code);
    });
}
