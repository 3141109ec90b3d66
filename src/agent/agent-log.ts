/** A line on stderr for the operator: what the agent did, with lease ids and paths, never a credential. */
export type AgentLog = (message: string) => void;

export const stderrLog: AgentLog = (message) =>
  process.stderr.write(`${new Date().toISOString()} credbroker agent: ${message}\n`);
