/**
 * Run by test/util/zstd-engines.test.ts under a Node.js whose node:zlib has zstd: compresses a
 * corpus with both engines at many levels and writes the golden squashfs image with the engine
 * chosen automatically, printing one JSON report on stdout.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeSquashfs } from '../../builder/formats/squashfs/index.ts';
import { shutdownPools } from '../../builder/formats/squashfs/pool.ts';
import { reusableZstd } from '../../builder/util/zlib-handle.ts';
import { zstdCodec, zstdEngine } from '../../builder/util/zstd.ts';
import { goldenTree } from './squashfs-golden.ts';
import { pattern } from './squashfs-trees.ts';

const text = new TextEncoder().encode('squashfs zstd block '.repeat(7000)).subarray(0, 131072);
const elf = readFileSync(process.execPath).subarray(0, 1 << 20);
const corpus: Record<string, Uint8Array> = {
  empty: new Uint8Array(0),
  one: new Uint8Array([7]),
  zeros: new Uint8Array(131072),
  text,
  pattern: pattern(131072, 5),
  noise: pattern(65536, 9, true),
  elf128k: elf.subarray(0, 131072),
  elf1m: elf,
  tail: elf.subarray(4096, 4096 + 3333),
};
const node = await zstdCodec('node');
const wasm = await zstdCodec('wasm');
const mismatches: string[] = [];
let cases = 0;
for (const [name, data] of Object.entries(corpus)) {
  for (const level of [1, 2, 3, 5, 9, 12, 15, 17, 19, 22]) {
    if (level > 19 && data.length > 131072) continue;
    cases++;
    const a = node.compress(data, level);
    const b = wasm.compress(data, level);
    if (Buffer.compare(a, b) !== 0) mismatches.push(`${name} level ${level}: node ${a.length} bytes, wasm ${b.length} bytes`);
    if (Buffer.compare(wasm.decompress(a, data.length), data) !== 0) mismatches.push(`${name} level ${level}: wasm cannot read node's frame`);
    if (Buffer.compare(node.decompress(b, data.length), data) !== 0) mismatches.push(`${name} level ${level}: node cannot read wasm's frame`);
  }
}
const work = await mkdtemp(join(tmpdir(), 'ossify-zstd-engines-'));
const images: Record<string, string> = {};
try {
  for (const threads of [1, 2]) {
    const img = join(work, `g${threads}.sqfs`);
    await writeSquashfs(goldenTree(), img, { compression: 'zstd', threads });
    images[`threads ${threads}`] = createHash('sha256').update(await readFile(img)).digest('hex');
  }
} finally {
  await rm(work, { recursive: true, force: true });
  await shutdownPools();
}
const reusable = typeof reusableZstd(15) === 'function';
process.stdout.write(JSON.stringify({ node: process.version, zstd: process.versions.zstd, engine: zstdEngine(), reusable, cases, mismatches, images }));
