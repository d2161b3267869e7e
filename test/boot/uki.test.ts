import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { buildUki, readUki, UKI_SECTION_ORDER, type UkiInput } from '../../builder/boot/uki.ts';
import { parsePe, peChecksum, sectionData } from '../../builder/formats/pe/index.ts';
import { requireTool, runOk } from '../helpers/oracle.ts';

const STUB_PATH = '/usr/lib/systemd/boot/efi/linuxx64.efi.stub';
const dir = mkdtempSync(join(tmpdir(), 'ossify-uki-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function stub(): Buffer {
  try {
    return readFileSync(STUB_PATH);
  } catch {
    throw new Error(`${STUB_PATH} is missing: apt-get install systemd-boot-efi`);
  }
}

/**
 * A stand-in kernel: any PE passes buildUki's check (the booting test uses a real kernel);
 * the stub itself plus an odd-sized tail is a PE at hand.
 */
function fakeKernel(): Uint8Array {
  const k = Buffer.from(stub());
  return Buffer.concat([k, Buffer.alloc(100_003, 0x5a)]);
}

function input(over: Partial<UkiInput> = {}): UkiInput {
  return {
    stub: stub(),
    kernel: fakeKernel(),
    initrd: Uint8Array.from({ length: 70_001 }, (_, i) => (i * 7) & 0xff),
    cmdline: 'console=ttyS0 ro ossify.slot=a',
    osRelease: 'ID=ossify\nVERSION_ID=1.2.3\nPRETTY_NAME="ossify 1.2.3"\n',
    uname: '6.1.0-56-cloud-amd64',
    ...over,
  };
}

describe('unified kernel image', () => {
  it('objdump lists the stub’s sections, then .osrel .cmdline .uname .initrd .linux, aligned and sized', () => {
    requireTool('objdump', 'binutils');
    requireTool('objcopy', 'binutils');
    const inp = input();
    const uki = buildUki(inp);
    const path = join(dir, 'uki.efi');
    writeFileSync(path, uki);
    const stubH = parsePe(inp.stub);
    const h = parsePe(uki);

    const lines = runOk('objdump', ['-h', path]).split('\n');
    const rows = lines
      .map((l, i) => ({ m: /^\s*\d+\s+(\S+)\s+([0-9a-f]+)\s+([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)\s/.exec(l), flags: lines[i + 1] ?? '' }))
      .filter((r) => r.m)
      .map(({ m, flags }) => ({ name: m![1]!, size: parseInt(m![2]!, 16), vma: parseInt(m![3]!, 16), off: parseInt(m![4]!, 16), flags }));
    expect(rows.map((r) => r.name)).toEqual([...stubH.sections.map((s) => s.name), ...UKI_SECTION_ORDER]);
    const added = rows.slice(stubH.sections.length);
    const expected: Record<string, Uint8Array> = {
      '.osrel': new TextEncoder().encode(inp.osRelease),
      '.cmdline': new TextEncoder().encode(inp.cmdline),
      '.uname': new TextEncoder().encode(inp.uname),
      '.initrd': inp.initrd,
      '.linux': inp.kernel,
    };
    let end = Math.max(...stubH.sections.map((s) => s.virtualAddress + s.virtualSize));
    for (const r of added) {
      expect(r.size).toBe(expected[r.name]!.length);
      expect(r.vma).toBe(Math.ceil(end / h.sectionAlignment) * h.sectionAlignment);
      expect(r.off % h.fileAlignment).toBe(0);
      end = r.vma + r.size;
      const out = join(dir, `${r.name.slice(1)}.bin`);
      runOk('objcopy', ['-O', 'binary', `--only-section=${r.name}`, path, out]);
      expect(readFileSync(out).equals(Buffer.from(expected[r.name]!))).toBe(true);
    }
    expect(added.at(-1)!.flags).toMatch(/CODE/);
    for (const r of added.slice(0, -1)) expect(r.flags).toMatch(/READONLY, DATA/);
    expect(h.sizeOfImage).toBe(Math.ceil(end / h.sectionAlignment) * h.sectionAlignment);
    expect(h.timeDateStamp).toBe(stubH.timeDateStamp);
    expect(h.checkSum).toBe(peChecksum(uki, h.offsets.checkSum));
    expect(h.addressOfEntryPoint).toBe(stubH.addressOfEntryPoint);
    const text = stubH.sections.find((s) => s.name === '.text')!;
    expect(Buffer.from(sectionData(uki, text)).equals(Buffer.from(sectionData(inp.stub, text)))).toBe(true);
  });

  it('is a pure function of its inputs', () => {
    const a = buildUki(input());
    const b = buildUki(input());
    expect(Buffer.from(a).equals(Buffer.from(b))).toBe(true);
    const c = buildUki(input({ cmdline: 'console=ttyS0 ro ossify.slot=b' }));
    expect(Buffer.from(a).equals(Buffer.from(c))).toBe(false);
  });

  it('reads back what it wrote', () => {
    const inp = input();
    const r = readUki(buildUki(inp));
    expect(r.osRelease).toBe(inp.osRelease);
    expect(r.cmdline).toBe(inp.cmdline);
    expect(r.uname).toBe(inp.uname);
    expect(Buffer.from(r.initrd!).equals(Buffer.from(inp.initrd))).toBe(true);
    expect(Buffer.from(r.linux!).equals(Buffer.from(inp.kernel))).toBe(true);
  });

  it('leaves out empty optional sections; .linux stays last', () => {
    const h = parsePe(buildUki(input({ initrd: new Uint8Array(), cmdline: '' })));
    expect(h.sections.map((s) => s.name).slice(-3)).toEqual(['.osrel', '.uname', '.linux']);
  });

  it('rejects a kernel that is not an EFI-stub PE and a stub that is not systemd-stub', () => {
    expect(() => buildUki(input({ kernel: new Uint8Array(5000) }))).toThrow(/CONFIG_EFI_STUB/);
    expect(() => buildUki(input({ kernel: new Uint8Array() }))).toThrow(/empty/);
    const notStub = parsePe(stub());
    const renamed = Buffer.from(stub());
    const magic = notStub.sections.find((s) => s.name === '.sdmagic')!;
    renamed.write('.sdmagix', magic.headerOffset, 'latin1');
    expect(() => buildUki(input({ stub: renamed }))).toThrow(/systemd-stub/);
  });
});

describe('UKI entries (boot.entries: uki)', () => {
  it('names carry the generation first, then the slot and the boot counter; .osrel has no version field', async () => {
    const { parseUkiFileName, ukiFileName, ukiOsRelease } = await import('../../builder/boot/entries.ts');
    expect(ukiFileName('b', 7, { left: 3 })).toBe('ossify-7-b+3.efi');
    expect(ukiFileName('a', 12, { left: 1, done: 2 })).toBe('ossify-12-a+1-2.efi');
    expect(ukiFileName('a', 2)).toBe('ossify-2-a.efi');
    expect(parseUkiFileName('ossify-7-b+3.efi')).toEqual({ slot: 'b', generation: 7, counting: { state: 'trying', left: 3, done: 0 } });
    expect(parseUkiFileName('ossify-7-b+0-3.efi')).toEqual({ slot: 'b', generation: 7, counting: { state: 'bad', done: 3 } });
    expect(parseUkiFileName('OSSIFY-2-A.EFI')).toEqual({ slot: 'a', generation: 2, counting: { state: 'good' } });
    expect(parseUkiFileName('ossify-a.conf')).toBeUndefined();
    expect(parseUkiFileName('linux.efi')).toBeUndefined();
    const osrel = ukiOsRelease({ name: 'edge', version: '1.2.3', slot: 'a' });
    expect(osrel).toBe('ID=ossify\nNAME="edge"\nPRETTY_NAME="edge 1.2.3 (slot a)"\n');
  });

  it('a profile may only ask for Secure Boot with UKIs', async () => {
    const { Profile } = await import('../../builder/profile/schema.ts');
    const base = { name: 'x', version: '1', kernel: { input: { deb: 'k' } }, initramfs: { busybox: { deb: 'b' } }, rootfs: { inputs: [{ deb: 'b' }] } };
    const type1 = Profile.safeParse({ ...base, boot: { secureBoot: { keys: 'k' } } });
    expect(type1.success).toBe(false);
    expect(type1.error?.issues[0]).toMatchObject({ path: ['boot', 'secureBoot'], message: expect.stringMatching(/^used with boot.entries: uki/) });
    expect(Profile.safeParse({ ...base, boot: { entries: 'uki', secureBoot: { keys: 'k', signer: 'sbsign', enroll: 'manual' } } }).success).toBe(true);
  });
});
