/**
 * The PE optional header CheckSum (imagehlp's CheckSumMappedFile): a 16-bit one's-complement
 * sum of the file's little-endian words with the CheckSum field itself read as zero, plus the
 * file length. UEFI firmware ignores it; Windows tooling and some verifiers do not, and a
 * stale value after appending sections would look like corruption.
 */
export function peChecksum(bytes: Uint8Array, checkSumOffset: number): number {
  let sum = 0;
  const n = bytes.length;
  const even = n & ~1;
  for (let i = 0; i < even; i += 2) {
    if (i === checkSumOffset || i === checkSumOffset + 2) continue;
    sum += bytes[i]! | (bytes[i + 1]! << 8);
    // Fold the carry now and then; deferring it keeps the loop tight and the result identical.
    if (sum > 0x7fff_ffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  }
  if (n & 1) sum += bytes[n - 1]!;
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return (sum + n) >>> 0;
}

/** Writes the checksum into the image in place. */
export function updatePeChecksum(bytes: Uint8Array, checkSumOffset: number): number {
  const c = peChecksum(bytes, checkSumOffset);
  new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).setUint32(checkSumOffset, c, true);
  return c;
}
