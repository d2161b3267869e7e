/** One benchmark comparison: ossify against the peer tool on the same work, in one run. */
export interface BenchRow {
  name: string;
  ours: number;
  theirs: number;
  /** ours / theirs: below 1.0 means ossify is faster (or smaller). */
  ratio: number;
  unit: string;
}
