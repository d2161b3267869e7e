import { serveTasks } from '../../builder/util/worker.ts';

/** A worker for test/util/worker-pool.test.ts: echoes, throws, or dies, as the task says. */
serveTasks((task: { op: 'echo' | 'throw' | 'exit'; bytes: Uint8Array; wait?: number }) => {
  if (task.op === 'exit') process.exit(3);
  if (task.op === 'throw') throw new Error(`refused ${task.bytes.length} bytes`);
  // Busy-wait so replies come back in another order than the tasks went out.
  const until = Date.now() + (task.wait ?? 0);
  while (Date.now() < until);
  return { reply: task.bytes, transfer: [task.bytes.buffer as ArrayBuffer] };
});
