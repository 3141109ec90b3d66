import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { exportedSeriesNames } from '../../src/metrics/registry.js';
import { DEPLOY } from './deploy-render.js';

const EXPORTED = new Set(exportedSeriesNames());

/** The credbroker series an expression names (a label value or a `{{ }}` template is not one). */
const seriesIn = (expr: string): string[] =>
  [...expr.replace(/"[^"]*"/g, '""').matchAll(/\bcredbroker_\w+/g)].map((m) => m[0]);

interface Rule {
  alert: string;
  expr: string;
  labels?: Record<string, string>;
}

describe('deploy/prometheus/alerts.yaml', () => {
  const rules = (
    parse(readFileSync(join(DEPLOY, 'prometheus/alerts.yaml'), 'utf8')) as { groups: { rules: Rule[] }[] }
  ).groups.flatMap((g) => g.rules);

  it('alerts on irrevocable leases, reaper lag, failing audit sinks and denial spikes', () => {
    const named = rules.map((r) => seriesIn(r.expr)).flat();
    for (const series of [
      'credbroker_irrevocable_leases',
      'credbroker_reaper_lag_seconds_bucket',
      'credbroker_audit_sink_failures_total',
      'credbroker_policy_denials_total',
    ])
      expect(named).toContain(series);
  });

  it.each(rules.map((r) => [r.alert, r] as const))(
    '%s names only series the broker exports, and has a severity',
    (_, rule) => {
      const series = seriesIn(rule.expr);
      expect(series.length).toBeGreaterThan(0);
      expect(series.filter((s) => !EXPORTED.has(s))).toEqual([]);
      expect(['warning', 'critical']).toContain(rule.labels?.severity);
    },
  );
});

describe('deploy/grafana/credbroker.json', () => {
  const dashboard = JSON.parse(readFileSync(join(DEPLOY, 'grafana/credbroker.json'), 'utf8')) as {
    panels: { title: string; targets: { expr: string }[] }[];
  };

  it('every panel queries only series the broker exports', () => {
    expect(dashboard.panels.length).toBeGreaterThan(0);
    for (const panel of dashboard.panels) {
      const series = panel.targets.flatMap((t) => seriesIn(t.expr));
      expect({ panel: panel.title, some: series.length > 0, unknown: series.filter((s) => !EXPORTED.has(s)) }).toEqual({
        panel: panel.title,
        some: true,
        unknown: [],
      });
    }
  });

  it('shows every metric the broker exports somewhere', () => {
    const shown = new Set(dashboard.panels.flatMap((p) => p.targets.flatMap((t) => seriesIn(t.expr))));
    const bases = exportedSeriesNames().filter((s) => !/_(sum|count)$/.test(s));
    const hidden = bases.filter((s) => !shown.has(s) && !shown.has(s.replace(/_bucket$/, '_sum')));
    expect(hidden).toEqual([]);
  });
});
