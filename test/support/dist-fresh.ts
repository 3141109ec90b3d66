import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

/** The compiled sources: what tsconfig.json includes, less what it excludes (tests). */
const SOURCE_DIRS = ['src', 'engines'];
const isCompiled = (file: string) => file.endsWith('.ts') && !file.endsWith('.test.ts') && !file.endsWith('.d.ts');

function* sourceFiles(dir: string): Generator<string> {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) yield* sourceFiles(path);
    else if (isCompiled(entry.name)) yield path;
  }
}

const mtimeOf = (path: string): number | null => {
  try {
    return statSync(path).mtimeMs;
  } catch {
    return null;
  }
};

/**
 * The source files whose compiled dist/ file is missing or older than they are. Integration tests
 * spawn dist/ (the CLI, fixtures that run the broker in a child): without a build after a change
 * they would test yesterday's code and pass.
 */
export function staleDistFiles(root: string): string[] {
  const stale: string[] = [];
  for (const dir of SOURCE_DIRS) {
    for (const source of sourceFiles(join(root, dir))) {
      const rel = relative(root, source);
      const built = mtimeOf(join(root, 'dist', rel.replace(/\.ts$/, '.js')));
      if (built === null || built < statSync(source).mtimeMs) stale.push(rel);
    }
  }
  return stale;
}

/** Throws, naming a few stale files, unless dist/ is as new as every source file. */
export function assertDistFresh(root: string): void {
  const stale = staleDistFiles(root);
  if (stale.length === 0) return;
  const shown = stale.slice(0, 5).join(', ') + (stale.length > 5 ? ` and ${stale.length - 5} more` : '');
  throw new Error(
    `dist/ is older than the sources (${shown}): run npm run build first (integration tests run dist/ in child processes)`,
  );
}
