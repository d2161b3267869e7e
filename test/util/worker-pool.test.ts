import { describe, expect, it } from 'vitest';
import { sharedTaskPool, shutdownTaskPools, startTaskPool } from '../../builder/util/worker.ts';

type Task = { op: 'echo' | 'throw' | 'exit'; bytes: Uint8Array; wait?: number };
const entry = new URL('../helpers/task-worker.ts', import.meta.url);
const opts = { entry, threads: 2, name: 'test worker' };

describe('worker task pool', () => {
  it('matches replies to their tasks by id and moves transferred buffers', async () => {
    const pool = await startTaskPool<Task, Uint8Array>(opts);
    try {
      const sent = Array.from({ length: 8 }, (_, i) => Uint8Array.of(i, i, i));
      const replies = sent.map((bytes, i) => pool.run({ op: 'echo', bytes, wait: (8 - i) * 5 }, [bytes.buffer]));
      // Transferred, not copied: the caller's buffers are detached.
      expect(sent.every((b) => b.byteLength === 0)).toBe(true);
      expect((await Promise.all(replies)).map((r) => [...r])).toEqual(sent.map((_, i) => [i, i, i]));
    } finally {
      await pool.terminate();
    }
  });

  it('fails only the task whose handler throws, and keeps serving', async () => {
    const pool = await startTaskPool<Task, Uint8Array>(opts);
    try {
      await expect(pool.run({ op: 'throw', bytes: new Uint8Array(5) })).rejects.toThrow('refused 5 bytes');
      expect([...(await pool.run({ op: 'echo', bytes: Uint8Array.of(7) }))]).toEqual([7]);
    } finally {
      await pool.terminate();
    }
  });

  it('fails every pending task when a worker dies, and a shared pool starts afresh', async () => {
    const pool = await sharedTaskPool<Task, Uint8Array>('test', opts);
    expect(await sharedTaskPool('test', opts)).toBe(pool);
    const slow = pool.run({ op: 'echo', bytes: new Uint8Array(1), wait: 2000 });
    const dying = pool.run({ op: 'exit', bytes: new Uint8Array(1) });
    await expect(dying).rejects.toThrow('test worker exited with code 3');
    await expect(slow).rejects.toThrow('test worker exited with code 3');
    await expect(pool.run({ op: 'echo', bytes: new Uint8Array(1) })).rejects.toThrow('exited with code 3');
    const fresh = await sharedTaskPool<Task, Uint8Array>('test', opts);
    expect(fresh).not.toBe(pool);
    expect([...(await fresh.run({ op: 'echo', bytes: Uint8Array.of(9) }))]).toEqual([9]);
    await shutdownTaskPools();
  });
});
