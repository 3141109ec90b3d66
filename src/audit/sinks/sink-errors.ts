/**
 * Why a streaming sink refused or failed a write. Internal to the audit layer: the Auditor logs only
 * the sink's name and this `code`, never a message, so none of these ever quotes a record.
 */
export class SinkWriteError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** The sink already holds `buffer` records not yet accepted: refused at once, not queued. */
export const bufferFull = (name: string) => new SinkWriteError('ERR_SINK_BUFFER_FULL', `audit sink ${name} is full`);

/** The sink has not accepted anything within its timeout: refused at once until it recovers. */
export const stalled = (name: string) => new SinkWriteError('ERR_SINK_STALLED', `audit sink ${name} is not accepting`);

export const closed = (name: string) => new SinkWriteError('ERR_SINK_CLOSED', `audit sink ${name} is closed`);
