import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

/**
 * The builder's layers, read from its source: every import of every builder/**\/*.ts file
 * (static `import … from`, `export … from`, and `import('…')` with a literal path) resolved
 * to the builder file it names. Type-only imports count for the layer rules (a type is a
 * dependency on the module's vocabulary too) but not for cycles: they are erased, so they
 * never decide the order modules are evaluated in, which is what a cycle breaks.
 */

const ROOT = resolve(import.meta.dirname, '..');

interface Import {
  from: string;
  to: string;
  /** The import as written, for messages. */
  spec: string;
  line: number;
  typeOnly: boolean;
}

function builderFiles(dir: string): string[] {
  return readdirSync(join(ROOT, dir), { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? builderFiles(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [],
  );
}

function importsOf(file: string): Import[] {
  const text = readFileSync(join(ROOT, file), 'utf8');
  const sf = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true);
  const out: Import[] = [];
  const add = (lit: ts.Expression | undefined, typeOnly: boolean) => {
    if (!lit || !ts.isStringLiteralLike(lit) || !lit.text.startsWith('.')) return;
    out.push({
      from: file,
      to: relative(ROOT, resolve(ROOT, dirname(file), lit.text)),
      spec: lit.text,
      line: sf.getLineAndCharacterOfPosition(lit.getStart()).line + 1,
      typeOnly,
    });
  };
  const visit = (node: ts.Node) => {
    if (ts.isImportDeclaration(node)) {
      const c = node.importClause;
      const named = c?.namedBindings && ts.isNamedImports(c.namedBindings) ? c.namedBindings.elements : undefined;
      const allTypes = !!c && (c.isTypeOnly || (!c.name && !!named && named.length > 0 && named.every((e) => e.isTypeOnly)));
      add(node.moduleSpecifier, allTypes);
    } else if (ts.isExportDeclaration(node)) {
      const named = node.exportClause && ts.isNamedExports(node.exportClause) ? node.exportClause.elements : undefined;
      add(node.moduleSpecifier, node.isTypeOnly || (!!named && named.length > 0 && named.every((e) => e.isTypeOnly)));
    } else if (ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword) {
      add(node.arguments[0], false);
    } else if (ts.isImportTypeNode(node) && ts.isLiteralTypeNode(node.argument)) {
      add(node.argument.literal, true);
    }
    ts.forEachChild(node, visit);
  };
  visit(sf);
  return out;
}

const FILES = builderFiles('builder').sort();
const IMPORTS = FILES.flatMap(importsOf).filter((i) => i.to.startsWith('builder/'));

const under = (dir: string) => (path: string) => path.startsWith(`${dir}/`);

interface Rule {
  name: string;
  /** True when the import breaks the rule. */
  breaks: (i: Import) => boolean;
}

const RULES: Rule[] = [
  { name: 'inputs/ does not import lock/', breaks: (i) => under('builder/inputs')(i.from) && under('builder/lock')(i.to) },
  { name: 'oci/ does not import installer/ or release/', breaks: (i) => under('builder/oci')(i.from) && (under('builder/installer')(i.to) || under('builder/release')(i.to)) },
  { name: 'site/ does not import pipeline.ts', breaks: (i) => under('builder/site')(i.from) && i.to === 'builder/pipeline.ts' },
  {
    // tree/ is the file tree the format writers serialise: the one layer between them and util/.
    name: 'formats/ imports only formats/, tree/ and util/',
    breaks: (i) => under('builder/formats')(i.from) && !['formats', 'tree', 'util'].some((d) => under(`builder/${d}`)(i.to)),
  },
  { name: 'tree/ imports only tree/ and util/', breaks: (i) => under('builder/tree')(i.from) && !under('builder/tree')(i.to) && !under('builder/util')(i.to) },
];

/**
 * Imports that break a rule today, each to be removed by the change that owns it (`from` and
 * `to` are files, or folders when they end in `/`). An entry that no longer matches an import
 * fails the test, so the list only shrinks.
 */
const ALLOWED: { rule: string; from: string; to: string; reason: string }[] = [];

const matches = (pattern: string, path: string) => (pattern.endsWith('/') ? path.startsWith(pattern) : path === pattern);

/** Every import cycle among builder modules (runtime imports), each as the path that closes it. */
function cycles(files: readonly string[], imports: readonly Import[]): string[][] {
  const edges = new Map<string, string[]>();
  for (const i of imports) if (!i.typeOnly) edges.set(i.from, [...(edges.get(i.from) ?? []), i.to]);
  const found = new Map<string, string[]>();
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const walk = (n: string) => {
    state.set(n, 'open');
    stack.push(n);
    for (const m of [...new Set(edges.get(n) ?? [])].sort()) {
      if (state.get(m) === 'open') {
        const path = [...stack.slice(stack.indexOf(m)), m];
        // One entry per cycle, whichever module the walk entered it from.
        const key = [...path.slice(0, -1)].sort().join(' ');
        if (!found.has(key)) found.set(key, path);
      } else if (!state.has(m)) walk(m);
    }
    stack.pop();
    state.set(n, 'done');
  };
  for (const f of files) if (!state.has(f)) walk(f);
  return [...found.values()];
}

describe('builder layers', () => {
  it('reads the imports of every builder file', () => {
    // The walk must see what it checks: a parser that found nothing would pass every rule.
    expect(FILES.length).toBeGreaterThan(100);
    expect(IMPORTS.length).toBeGreaterThan(FILES.length);
    const pipeline = IMPORTS.filter((i) => i.from === 'builder/pipeline.ts').map((i) => i.to);
    expect(pipeline).toContain('builder/release/installer-image.ts');
    // Dynamic imports count: outputs/ loads its writers on demand.
    expect(IMPORTS.some((i) => i.from === 'builder/outputs/index.ts' && i.spec.startsWith('./') && !i.typeOnly)).toBe(true);
    for (const i of IMPORTS) expect(FILES, `${i.from}:${i.line} imports ${i.spec}, which is no builder file`).toContain(i.to);
  });

  for (const rule of RULES) {
    it(rule.name, () => {
      const allowed = ALLOWED.filter((a) => a.rule === rule.name);
      const bad = IMPORTS.filter(rule.breaks);
      const unexpected = bad.filter((i) => !allowed.some((a) => matches(a.from, i.from) && matches(a.to, i.to))).map((i) => `${i.from}:${i.line} imports '${i.spec}'`);
      expect(unexpected, `${rule.name}, but:`).toEqual([]);
      const stale = allowed.filter((a) => !bad.some((i) => matches(a.from, i.from) && matches(a.to, i.to))).map((a) => `${a.from} → ${a.to}`);
      expect(stale, 'allowed imports that no longer exist: remove them from ALLOWED').toEqual([]);
    });
  }

  it('has no import cycle among builder modules', () => {
    expect(cycles(FILES, IMPORTS).map((c) => c.join(' → '))).toEqual([]);
  });

  it('finds a cycle and a broken rule when there is one', () => {
    // The checks themselves, on a made-up graph: a test that cannot fail proves nothing.
    const fake = (from: string, to: string, typeOnly = false): Import => ({ from, to, spec: to, line: 1, typeOnly });
    const graph = [fake('builder/a.ts', 'builder/b.ts'), fake('builder/b.ts', 'builder/c.ts'), fake('builder/c.ts', 'builder/a.ts'), fake('builder/c.ts', 'builder/d.ts', true), fake('builder/d.ts', 'builder/c.ts')];
    expect(cycles(['builder/a.ts', 'builder/b.ts', 'builder/c.ts', 'builder/d.ts'], graph).map((c) => c.join(' → '))).toEqual(['builder/a.ts → builder/b.ts → builder/c.ts → builder/a.ts']);
    expect(RULES.find((r) => r.name.startsWith('formats/'))!.breaks(fake('builder/formats/gpt.ts', 'builder/disk/layout.ts'))).toBe(true);
    expect(RULES.find((r) => r.name.startsWith('tree/'))!.breaks(fake('builder/tree/tree.ts', 'builder/formats/tar.ts'))).toBe(true);
    expect(RULES.find((r) => r.name.startsWith('formats/'))!.breaks(fake('builder/formats/gpt.ts', 'builder/util/crc32.ts'))).toBe(false);
  });
});
