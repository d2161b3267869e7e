/**
 * The release string an x86 bzImage carries in its setup header (boot protocol ≥ 2.00):
 * `kernel_version` at 0x20e points, less 0x200, at "6.1.0-56-cloud-amd64 (debian-kernel@…) #1 SMP …".
 * Its first word is what `uname -r` will say, so it names the module directory.
 */
export function bzImageVersion(image: Uint8Array): string | undefined {
  if (image.length < 0x210) return undefined;
  if (Buffer.from(image.subarray(0x202, 0x206)).toString('latin1') !== 'HdrS') return undefined;
  const dv = new DataView(image.buffer, image.byteOffset, image.byteLength);
  if (dv.getUint16(0x206, true) < 0x200) return undefined;
  const ptr = dv.getUint16(0x20e, true);
  if (ptr === 0) return undefined;
  const start = ptr + 0x200;
  if (start >= image.length) return undefined;
  let end = start;
  while (end < image.length && end - start < 256 && image[end] !== 0) end++;
  const word = Buffer.from(image.subarray(start, end)).toString('latin1').split(/\s/)[0];
  return word && /^[0-9][A-Za-z0-9._+~-]*$/.test(word) ? word : undefined;
}
