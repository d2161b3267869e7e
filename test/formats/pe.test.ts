import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import {
  addPeSections,
  parsePe,
  peChecksum,
  SCN_CNT_INITIALIZED_DATA,
  SCN_MEM_READ,
  sectionData,
  type NewSection,
} from '../../builder/formats/pe/index.ts';
import { requireTool, run, runOk } from '../helpers/oracle.ts';

const STUB_PATH = '/usr/lib/systemd/boot/efi/linuxx64.efi.stub';
const dir = mkdtempSync(join(tmpdir(), 'ossify-pe-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let seq = 0;
const tmp = (name: string) => join(dir, `${seq++}-${name}`);

function stub(): Buffer {
  try {
    return readFileSync(STUB_PATH);
  } catch {
    throw new Error(`${STUB_PATH} is missing: apt-get install systemd-boot-efi`);
  }
}

function needBinutils(): void {
  requireTool('objdump', 'binutils');
  requireTool('objcopy', 'binutils');
}

interface ObjdumpSection {
  name: string;
  size: number;
  vma: number;
  fileOff: number;
  flags: string;
}

/** `objdump -h` of a PE: Size is the VirtualSize, VMA the VirtualAddress (ImageBase is 0). */
function objdumpSections(path: string): ObjdumpSection[] {
  const out = runOk('objdump', ['-h', path]).split('\n');
  const res: ObjdumpSection[] = [];
  for (let i = 0; i < out.length; i++) {
    const m = /^\s*\d+\s+(\S+)\s+([0-9a-f]+)\s+([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)\s/.exec(out[i]!);
    if (m) res.push({ name: m[1]!, size: parseInt(m[2]!, 16), vma: parseInt(m[3]!, 16), fileOff: parseInt(m[4]!, 16), flags: (out[i + 1] ?? '').trim() });
  }
  return res;
}

function objdumpHeader(path: string): Record<string, string> {
  const f: Record<string, string> = {};
  for (const line of runOk('objdump', ['-p', path]).split('\n')) {
    const m = /^(\w+)\s+([0-9a-fA-F]+)\b/.exec(line);
    if (m && !(m[1]! in f)) f[m[1]!] = m[2]!;
  }
  return f;
}

const hex = (s: string) => parseInt(s, 16);

describe('PE headers', () => {
  it('parses systemd-stub as objdump does', () => {
    needBinutils();
    const bytes = stub();
    const h = parsePe(bytes);
    const od = objdumpHeader(STUB_PATH);
    expect(h.magic).toBe(0x20b);
    expect(h.machine).toBe(0x8664);
    expect(h.sectionAlignment).toBe(hex(od['SectionAlignment']!));
    expect(h.fileAlignment).toBe(hex(od['FileAlignment']!));
    expect(h.sizeOfImage).toBe(hex(od['SizeOfImage']!));
    expect(h.sizeOfHeaders).toBe(hex(od['SizeOfHeaders']!));
    expect(h.checkSum).toBe(hex(od['CheckSum']!));
    expect(h.sizeOfInitializedData).toBe(hex(od['SizeOfInitializedData']!));
    expect(h.addressOfEntryPoint).toBe(hex(od['AddressOfEntryPoint']!));
    expect(h.subsystem).toBe(10);
    expect(h.dataDirectories).toHaveLength(16);
    expect(h.sections.map((s) => ({ name: s.name, size: s.virtualSize, vma: s.virtualAddress, fileOff: s.pointerToRawData }))).toEqual(
      objdumpSections(STUB_PATH).map(({ name, size, vma, fileOff }) => ({ name, size, vma, fileOff })),
    );
    expect(h.sections.map((s) => s.name)).toContain('.sdmagic');
  });

  it('computes the same CheckSum the linker stored in the stub', () => {
    const bytes = stub();
    const h = parsePe(bytes);
    expect(h.checkSum).not.toBe(0);
    expect(peChecksum(bytes, h.offsets.checkSum)).toBe(h.checkSum);
  });

  it('rejects what is not a PE, with a reason', () => {
    expect(() => parsePe(new Uint8Array(10))).toThrow(/too short/);
    expect(() => parsePe(new Uint8Array(4096))).toThrow(/MZ/);
    const b = Buffer.from(stub());
    b.writeUInt32LE(0x400, 0x3c);
    expect(() => parsePe(b)).toThrow(/PE\\0\\0/);
  });
});

describe('appending PE sections', () => {
  const NAMES = ['.osrel', '.cmdline', '.uname', '.splash', '.dtb', '.initrd', '.linux'];

  it('property: objdump and objcopy see every appended section where and as big as it should be', () => {
    needBinutils();
    const base = stub();
    const baseH = parsePe(base);
    fc.assert(
      fc.property(
        fc.shuffledSubarray(NAMES, { minLength: 1, maxLength: 7 }),
        fc.array(fc.integer({ min: 1, max: 9000 }), { minLength: 7, maxLength: 7 }),
        fc.integer({ min: 0, max: 255 }),
        (names, sizes, fill) => {
          const add: NewSection[] = names.map((name, i) => ({
            name,
            data: Uint8Array.from({ length: sizes[i]! }, (_, j) => (j * 31 + i + fill) & 0xff),
            characteristics: SCN_CNT_INITIALIZED_DATA | SCN_MEM_READ,
          }));
          const out = addPeSections(base, add);
          const path = tmp('pe.efi');
          writeFileSync(path, out);
          const h = parsePe(out);
          const secs = objdumpSections(path);
          expect(secs.map((s) => s.name)).toEqual([...baseH.sections.map((s) => s.name), ...names]);
          let prevEnd = Math.max(...baseH.sections.map((s) => s.virtualAddress + s.virtualSize));
          for (const [i, a] of add.entries()) {
            const s = secs[baseH.sections.length + i]!;
            expect(s.size).toBe(a.data.length);
            expect(s.vma % h.sectionAlignment).toBe(0);
            expect(s.vma).toBe(Math.ceil(prevEnd / h.sectionAlignment) * h.sectionAlignment);
            expect(s.fileOff % h.fileAlignment).toBe(0);
            expect(s.flags).toMatch(/READONLY, DATA/);
            prevEnd = s.vma + s.size;
            const extracted = tmp('sec.bin');
            runOk('objcopy', ['-O', 'binary', `--only-section=${a.name}`, path, extracted]);
            expect(Buffer.from(readFileSync(extracted)).equals(Buffer.from(a.data))).toBe(true);
            expect(Buffer.from(sectionData(out, h.sections[baseH.sections.length + i]!)).equals(Buffer.from(a.data))).toBe(true);
            rmSync(extracted);
          }
          expect(h.sizeOfImage).toBe(Math.ceil(prevEnd / h.sectionAlignment) * h.sectionAlignment);
          expect(hex(objdumpHeader(path)['SizeOfImage']!)).toBe(h.sizeOfImage);
          expect(out.length % h.fileAlignment).toBe(0);
          expect(h.timeDateStamp).toBe(baseH.timeDateStamp);
          expect(h.checkSum).toBe(peChecksum(out, h.offsets.checkSum));
          expect(h.sizeOfInitializedData).toBe(
            baseH.sizeOfInitializedData + add.reduce((n, a) => n + Math.ceil(a.data.length / h.fileAlignment) * h.fileAlignment, 0),
          );
          // The stub's own sections are untouched.
          for (const s of baseH.sections) {
            expect(Buffer.from(sectionData(out, s)).equals(Buffer.from(sectionData(base, s)))).toBe(true);
          }
          rmSync(path);
        },
      ),
      { numRuns: 12, seed: 3 },
    );
  });

  it('drops the stub’s trailing COFF symbol table, which must not sit between sections', () => {
    const base = stub();
    const h0 = parsePe(base);
    expect(h0.pointerToSymbolTable).toBeGreaterThan(0); // systemd 252's stub still carries one
    const out = addPeSections(base, [{ name: '.x', data: new Uint8Array([1]), characteristics: SCN_MEM_READ }]);
    const h = parsePe(out);
    expect(h.pointerToSymbolTable).toBe(0);
    expect(h.numberOfSymbols).toBe(0);
    expect(h.characteristics & 0x0008).toBe(0x0008);
    expect(h.sections.at(-1)!.pointerToRawData).toBe(Math.ceil(h0.pointerToSymbolTable / 512) * 512);
  });

  it('errors clearly when the headers have no room for more section headers', () => {
    const base = stub();
    const h = parsePe(base);
    const room = Math.floor((h.sizeOfHeaders - h.offsets.sectionTableEnd) / 40);
    const make = (n: number) =>
      Array.from({ length: n }, (_, i) => ({ name: `.s${i}`, data: new Uint8Array([i]), characteristics: SCN_MEM_READ }));
    expect(parsePe(addPeSections(base, make(room))).numberOfSections).toBe(h.numberOfSections + room);
    expect(() => addPeSections(base, make(room + 1))).toThrow(new RegExp(`not enough header space for ${room + 1} more section headers.*room for ${room}`));
  });

  it('refuses duplicate, unnamed, long and empty sections, and signed images', () => {
    const base = stub();
    const one = (name: string, data = new Uint8Array([1])) => [{ name, data, characteristics: SCN_MEM_READ }];
    expect(() => addPeSections(base, one('.sdmagic'))).toThrow(/twice/);
    expect(() => addPeSections(base, [...one('.a'), ...one('.a')])).toThrow(/twice/);
    expect(() => addPeSections(base, one('.toolongname'))).toThrow(/1–8/);
    expect(() => addPeSections(base, one(''))).toThrow(/1–8/);
    expect(() => addPeSections(base, one('.e', new Uint8Array()))).toThrow(/empty/);
    const signed = Buffer.from(base);
    const h = parsePe(signed);
    signed.writeUInt32LE(base.length, h.offsets.dataDirectories + 4 * 8);
    signed.writeUInt32LE(8, h.offsets.dataDirectories + 4 * 8 + 4);
    expect(() => addPeSections(signed, one('.a'))).toThrow(/already signed/);
  });

  it('is deterministic', () => {
    const base = stub();
    const pristine = Buffer.from(base);
    const add = [{ name: '.a', data: new Uint8Array(1234).fill(3), characteristics: SCN_MEM_READ }];
    expect(Buffer.from(addPeSections(base, add)).equals(Buffer.from(addPeSections(base, add)))).toBe(true);
    const p = tmp('det.efi');
    writeFileSync(p, addPeSections(base, add));
    needBinutils();
    expect(run('objdump', ['-h', p]).code).toBe(0);
    expect(base.equals(pristine)).toBe(true); // the input is never modified
  });
});
