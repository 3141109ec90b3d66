import { z } from 'zod';
import type { BrokerMetrics } from '../../metrics/broker-metrics.js';
import { parseBody } from '../request-schemas.js';
import { authzOf, type Route } from './route.js';

/** Vault's query: only the Prometheus text format is served (Vault's JSON form is not). */
const metricsQuery = z.object({
  format: z.literal('prometheus', { error: 'format must be "prometheus": only the Prometheus text format is served' }),
});

/** Vault's sys/metrics, behind `read` on `sys/metrics` (a scraper gets a token with just that). */
export function metricsRoutes(metrics: BrokerMetrics): Route[] {
  return [
    {
      pattern: /^sys\/metrics$/,
      methods: {
        GET: async (ctx) => {
          authzOf(ctx).require('sys/metrics', ['read']);
          parseBody(metricsQuery, ctx.req.query);
          return { status: 200, text: await metrics.render(), headers: { 'content-type': metrics.contentType } };
        },
      },
    },
  ];
}
