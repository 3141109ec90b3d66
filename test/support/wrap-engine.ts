import { engines } from '../../engines/index.js';
import type { Engine, EngineContext, EngineRegistry, Target } from '../../src/engines.js';

/**
 * The registry with one engine's targets changed by `wrap` (a hook on issue, a slow revoke):
 * what a test passes as startBroker's `engines`, instead of patching the shared registry.
 */
export function withWrappedTarget<T extends keyof typeof engines>(
  type: T,
  wrap: (target: Target<any>, ctx: EngineContext) => Target<any> | void,
): EngineRegistry {
  const real: Engine<any, any> = engines[type];
  const wrapped: Engine<any, any> = {
    ...real,
    async connect(mount, ctx) {
      const target = await real.connect(mount, ctx);
      return wrap(target, ctx) ?? target;
    },
  };
  return { ...engines, [type]: wrapped };
}
