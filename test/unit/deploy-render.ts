import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments, type Document } from 'yaml';

/** Helpers shared by the deploy-*.test.ts files: find, render and validate what deploy/ holds. */
export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const DEPLOY = join(ROOT, 'deploy');
export const KUBERNETES = join(DEPLOY, 'kubernetes');
export const rel = (f: string) => relative(ROOT, f);

// Rendered objects are plain JSON from YAML: walked by field name, as the tests below do.
export type K8sObject = Record<string, any>;

export function yamlFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return yamlFiles(path);
    return /\.ya?ml$/.test(entry.name) ? [path] : [];
  });
}

/** Every directory under deploy/kubernetes holding a kustomization.yaml, relative to deploy/kubernetes. */
export function kustomizationDirs(dir = KUBERNETES): string[] {
  const here = existsSync(join(dir, 'kustomization.yaml')) ? [relative(KUBERNETES, dir)] : [];
  const below = readdirSync(dir, { withFileTypes: true })
    .filter((e) => e.isDirectory())
    .flatMap((e) => kustomizationDirs(join(dir, e.name)));
  return [...here, ...below].sort();
}

export function strictDocuments(text: string): Document.Parsed[] {
  return parseAllDocuments(text, {
    version: '1.2',
    strict: true,
    uniqueKeys: true,
    prettyErrors: true,
  }) as Document.Parsed[];
}

export const problemsOf = (docs: Document.Parsed[]) =>
  docs.flatMap((d) => [...d.errors, ...d.warnings].map((e) => e.message));

export const kubectlFound = spawnSync('kubectl', ['version', '--client'], { encoding: 'utf8' }).status === 0;

export function kubectl(args: string[]) {
  const run = spawnSync('kubectl', args, { cwd: ROOT, encoding: 'utf8', timeout: 30_000 });
  return { status: run.status, stdout: run.stdout, stderr: run.stderr };
}

const rendered = new Map<string, K8sObject[]>();

/** `kubectl kustomize deploy/kubernetes/<dir>`, parsed; throws with kubectl's stderr if it fails. */
export function render(dir: string): K8sObject[] {
  const cached = rendered.get(dir);
  if (cached) return cached;
  const run = kubectl(['kustomize', join('deploy/kubernetes', dir)]);
  if (run.status !== 0 || run.stderr !== '') throw new Error(`kubectl kustomize ${dir}: ${run.stderr}`);
  const docs = strictDocuments(run.stdout);
  const problems = problemsOf(docs);
  if (problems.length) throw new Error(`kubectl kustomize ${dir} printed YAML with problems: ${problems.join('; ')}`);
  const objects = docs.map((d) => d.toJS() as K8sObject).filter(Boolean);
  rendered.set(dir, objects);
  return objects;
}

export const ofKind = (objects: K8sObject[], kind: string) => objects.filter((o) => o.kind === kind);

export function one(objects: K8sObject[], kind: string, namePrefix = ''): K8sObject {
  const found = objects.filter((o) => o.kind === kind && String(o.metadata?.name).startsWith(namePrefix));
  if (found.length !== 1) throw new Error(`expected one ${kind} ${namePrefix}…, found ${found.length}`);
  return found[0]!;
}

interface ModelClass {
  prototype: { validate(this: unknown): void };
}

/** The kubernetes-models class for an object's apiVersion and kind (cert-manager's from its package). */
async function modelFor(apiVersion: string, kind: string): Promise<ModelClass> {
  const spec = apiVersion.startsWith('cert-manager.io/')
    ? `@kubernetes-models/cert-manager/${apiVersion}/${kind}`
    : `kubernetes-models/${apiVersion}/${kind}`;
  const module = (await import(/* @vite-ignore */ spec)) as Record<string, ModelClass | undefined>;
  const model = module[kind];
  if (!model) throw new Error(`${spec} exports no ${kind}`);
  return model;
}

/**
 * Wraps `value` so that every own property the validator reads is recorded in `read`, and every
 * one it holds in `held`: a field the schema does not know is held but never read. The API
 * server rejects such a field (strict field validation); the JSON schemas alone let it pass.
 */
function tracked(value: unknown, path: string, read: Set<string>, held: Set<string>): unknown {
  if (!value || typeof value !== 'object') return value;
  for (const key of Object.keys(value)) held.add(`${path}/${key}`);
  return new Proxy(value, {
    get(target, key, receiver) {
      const v: unknown = Reflect.get(target, key, receiver);
      if (typeof key !== 'string') return v;
      if (Object.hasOwn(target, key)) read.add(`${path}/${key}`);
      return tracked(v, `${path}/${key}`, read, held);
    },
  });
}

/**
 * Validates an object against the Kubernetes OpenAPI schema of its kind (kubernetes-models'
 * compiled validators): the schema's errors, then every field the schema does not know.
 */
export async function schemaProblems(object: K8sObject): Promise<string[]> {
  const model = await modelFor(String(object.apiVersion), String(object.kind));
  const read = new Set<string>();
  const held = new Set<string>();
  const copy = tracked(structuredClone(object), '', read, held);
  const problems: string[] = [];
  try {
    model.prototype.validate.call(copy);
  } catch (err) {
    problems.push((err as Error).message);
  }
  for (const path of held) if (!read.has(path)) problems.push(`${path}: unknown field`);
  return problems;
}
