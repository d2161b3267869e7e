import { describe, expect, it } from 'vitest';
import { NODE_ZSTD_SAME_BYTES, zstdCodec, zstdEngine } from '../../builder/util/zstd.ts';
import { runOk } from '../helpers/oracle.ts';
import { requireNodeWithZstd } from '../helpers/node-runtime.ts';
import { GOLDEN } from '../helpers/squashfs-golden.ts';

/**
 * ossify compresses zstd with Node's own libzstd where the runtime has it and with the
 * WebAssembly build elsewhere (Node 20). Images must not depend on that: on a runtime that has
 * both, every level of a varied corpus gives the same frames from both engines, and the golden
 * image (test/helpers/squashfs-golden.ts) made with the native engine has the pinned hash.
 */
describe('zstd engines: node:zlib and WebAssembly write the same bytes', () => {
  it('on a Node.js with zstd in node:zlib, both engines agree and the native engine is the one chosen', () => {
    const node = requireNodeWithZstd();
    const out = runOk(node, ['--import', 'tsx', 'test/helpers/zstd-engines-probe.ts'], { env: { ...process.env, OSSIFY_ZSTD: '' } });
    const report = JSON.parse(out) as { zstd: string; engine: string; reusable: boolean; cases: number; mismatches: string[]; images: Record<string, string> };
    expect(report.mismatches).toEqual([]);
    // One context per thread, not one per block (util/zlib-handle.ts): Node's internals still fit.
    expect(report.reusable).toBe(true);
    expect(report.cases).toBeGreaterThan(80);
    expect(NODE_ZSTD_SAME_BYTES).toContain(report.zstd);
    expect(report.engine).toBe('node');
    expect(report.images).toEqual({ 'threads 1': GOLDEN.zstd, 'threads 2': GOLDEN.zstd });
  }, 300_000);

  it('OSSIFY_ZSTD picks an engine, and a bad value or a missing engine is a clear error', async () => {
    expect(zstdEngine({ OSSIFY_ZSTD: 'wasm' })).toBe('wasm');
    expect(() => zstdEngine({ OSSIFY_ZSTD: 'fast' })).toThrow(/OSSIFY_ZSTD must be "node" or "wasm", got "fast"/);
    if (typeof (process.versions as Record<string, unknown>).zstd === 'string') expect(zstdEngine({ OSSIFY_ZSTD: 'node' })).toBe('node');
    else expect(() => zstdEngine({ OSSIFY_ZSTD: 'node' })).toThrow(/has no zstd in node:zlib/);
    const wasm = await zstdCodec('wasm');
    const data = new TextEncoder().encode('abc'.repeat(5000));
    const frame = wasm.compress(data, 15);
    expect(Buffer.from(wasm.decompress(frame, data.length)).equals(Buffer.from(data))).toBe(true);
    expect(() => wasm.decompress(frame, data.length - 1)).toThrow();
  });
});
