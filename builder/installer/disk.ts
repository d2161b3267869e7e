import { constants } from 'node:fs';
import { open, readFile, stat, type FileHandle } from 'node:fs/promises';
import { InputError, OssifyError } from '../util/errors.ts';

/**
 * A disk image file or a block device, behind one interface so install and upgrade run the
 * same code on both. Plain positioned writes (no O_DIRECT: it needs aligned buffers and
 * buys nothing once every ordering point is an fsync), and a write guard so a bug can never
 * touch a partition the operation did not claim (the running slot above all).
 */
export interface Disk {
  readonly path: string;
  readonly size: number;
  readonly blockDevice: boolean;
  read(offset: number, length: number): Promise<Uint8Array>;
  write(offset: number, data: Uint8Array): Promise<void>;
  /** fsync: everything written so far is on the medium before the next step. */
  sync(): Promise<void>;
  close(): Promise<void>;
  /** From now on only these byte ranges may be written; anything else throws. */
  restrictWrites(ranges: WriteRange[]): void;
  /** Called with the size of every write (the step runner counts bytes for its test hook). */
  onWrite: ((bytes: number) => void) | undefined;
}

export interface WriteRange {
  offset: number;
  size: number;
  label: string;
}

/** Linux dev_t → major:minor, as glibc's gnu_dev_major/minor split it. */
function majorMinor(rdev: number): string {
  const d = BigInt(rdev);
  const major = ((d >> 8n) & 0xfffn) | ((d >> 32n) & ~0xfffn);
  const minor = (d & 0xffn) | ((d >> 12n) & ~0xffn);
  return `${major}:${minor}`;
}

async function blockDeviceSize(path: string, rdev: number): Promise<number> {
  const sysfs = `/sys/dev/block/${majorMinor(rdev)}/size`;
  try {
    // sysfs counts 512-byte sectors whatever the device's logical sector size.
    return Number((await readFile(sysfs, 'utf8')).trim()) * 512;
  } catch (err) {
    throw new OssifyError(`cannot read the size of ${path} from ${sysfs}`, { cause: err });
  }
}

export interface OpenDiskOptions {
  write: boolean;
}

export async function openDisk(path: string, opts: OpenDiskOptions): Promise<Disk> {
  const st = await stat(path).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') throw new InputError(`${path} does not exist`);
    throw new OssifyError(`cannot stat ${path}`, { cause: err });
  });
  const blockDevice = st.isBlockDevice();
  if (!blockDevice && !st.isFile()) throw new InputError(`${path} is neither a disk image file nor a block device`);
  // O_EXCL on a block device fails with EBUSY while anything has it mounted or claimed.
  const flags = opts.write ? constants.O_RDWR | (blockDevice ? constants.O_EXCL : 0) : constants.O_RDONLY;
  let fh: FileHandle;
  try {
    fh = await open(path, flags);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EBUSY') throw new InputError(`${path} is in use (mounted or claimed by another program)`, { hint: 'unmount its partitions first; to upgrade a running system use the installer script on the device' });
    if (code === 'EACCES' || code === 'EPERM') throw new InputError(`no permission to ${opts.write ? 'write' : 'read'} ${path}`, { hint: 'run as root or get access to the device' });
    throw new OssifyError(`cannot open ${path}`, { cause: err });
  }
  const size = blockDevice ? await blockDeviceSize(path, st.rdev) : st.size;
  return diskFromHandle(fh, path, size, blockDevice, opts.write);
}

function diskFromHandle(fh: FileHandle, path: string, size: number, blockDevice: boolean, writable: boolean): Disk {
  let allowed: WriteRange[] | undefined;
  const disk: Disk = {
    path,
    size,
    blockDevice,
    onWrite: undefined,
    async read(offset, length) {
      if (offset < 0 || offset + length > size) throw new OssifyError(`read of ${length} bytes at ${offset} is past the end of ${path} (${size} bytes)`);
      const buf = Buffer.alloc(length);
      let done = 0;
      while (done < length) {
        const { bytesRead } = await fh.read(buf, done, length - done, offset + done);
        if (bytesRead === 0) throw new OssifyError(`${path}: unexpected end of data at ${offset + done}`);
        done += bytesRead;
      }
      return buf;
    },
    async write(offset, data) {
      if (!writable) throw new OssifyError(`${path} is open read-only`);
      if (offset < 0 || offset + data.length > size) throw new OssifyError(`write of ${data.length} bytes at ${offset} is past the end of ${path} (${size} bytes)`);
      if (allowed && !allowed.some((r) => offset >= r.offset && offset + data.length <= r.offset + r.size)) {
        throw new OssifyError(`refusing a write of ${data.length} bytes at ${offset} of ${path}: outside ${allowed.map((r) => r.label).join(' and ')}`);
      }
      let done = 0;
      while (done < data.length) {
        const { bytesWritten } = await fh.write(data, done, data.length - done, offset + done);
        done += bytesWritten;
      }
      disk.onWrite?.(data.length);
    },
    async sync() {
      if (writable) await fh.sync();
    },
    async close() {
      await fh.close();
    },
    restrictWrites(ranges) {
      allowed = ranges;
    },
  };
  return disk;
}

/** A window onto one partition: offsets relative to its start, nothing outside it reachable. */
export function partitionIo(disk: Disk, part: { offset: number; size: number; label: string }) {
  const check = (offset: number, length: number) => {
    if (offset < 0 || offset + length > part.size) throw new OssifyError(`access of ${length} bytes at ${offset} is outside partition ${part.label} (${part.size} bytes)`);
  };
  return {
    size: part.size,
    read: async (offset: number, length: number) => {
      check(offset, length);
      return disk.read(part.offset + offset, length);
    },
    write: async (offset: number, data: Uint8Array) => {
      check(offset, data.length);
      await disk.write(part.offset + offset, data);
    },
    sync: () => disk.sync(),
  };
}
