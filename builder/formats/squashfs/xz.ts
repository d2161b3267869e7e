import type { Compressor } from './compress.ts';
import { CompressorId } from './constants.ts';
import { OssifyError } from '../../util/errors.ts';
import { LZMA_BUF_ERROR, LZMA_OK, lzmaLibrary, lzmaModule } from '../../util/lzma-wasm.ts';

const LZMA_CHECK_CRC32 = 1;
const LZMA_FILTER_LZMA2 = 0x21;
const LZMA_MODE_FAST = 1;
const LZMA_MODE_NORMAL = 2;
const LZMA_MF_HC3 = 0x03;
const LZMA_MF_HC4 = 0x04;
const LZMA_MF_BT4 = 0x14;
/** sizeof(lzma_options_lzma) and sizeof(lzma_filter) on wasm32. */
const OPTIONS_SIZE = 80;
const FILTER_SIZE = 16;

/**
 * liblzma's preset table (lzma_lzma_preset), restated because the WebAssembly build does
 * not export it. The dictionary is then cut to the block size, as mksquashfs does: the
 * kernel preallocates exactly that much and refuses streams that declare more.
 */
function presetOptions(level: number, dictSize: number) {
  const fast = level <= 3;
  return {
    dictSize,
    lc: 3,
    lp: 0,
    pb: 2,
    mode: fast ? LZMA_MODE_FAST : LZMA_MODE_NORMAL,
    niceLen: fast ? (level <= 1 ? 128 : 273) : level === 4 ? 16 : level === 5 ? 32 : 64,
    mf: fast ? (level === 0 ? LZMA_MF_HC3 : LZMA_MF_HC4) : LZMA_MF_BT4,
    depth: fast ? [4, 8, 24, 48][level]! : 0,
  };
}

export async function createXz(level: number, blockSize: number): Promise<Compressor> {
  const mod = await lzmaModule();
  const lib = await lzmaLibrary();
  const o = presetOptions(level, blockSize);
  // One scratch area per compressor: options, filter chain, out_pos, input, output.
  const outCap = blockSize + (blockSize >>> 4) + 1024;
  const base = mod._malloc(OPTIONS_SIZE + 2 * FILTER_SIZE + 8 + blockSize + outCap);
  if (!base) throw new OssifyError('xz: out of WebAssembly memory');
  const optPtr = base;
  const filtPtr = base + OPTIONS_SIZE;
  const outPosPtr = filtPtr + 2 * FILTER_SIZE;
  const inPtr = outPosPtr + 8;
  const outPtr = inPtr + blockSize;
  const init = () => {
    const dv = new DataView(mod.HEAPU8.buffer);
    for (let i = 0; i < OPTIONS_SIZE + 2 * FILTER_SIZE; i++) dv.setUint8(base + i, 0);
    dv.setUint32(optPtr + 0, o.dictSize, true);
    dv.setUint32(optPtr + 12, o.lc, true);
    dv.setUint32(optPtr + 16, o.lp, true);
    dv.setUint32(optPtr + 20, o.pb, true);
    dv.setUint32(optPtr + 24, o.mode, true);
    dv.setUint32(optPtr + 28, o.niceLen, true);
    dv.setUint32(optPtr + 32, o.mf, true);
    dv.setUint32(optPtr + 36, o.depth, true);
    dv.setBigUint64(filtPtr, BigInt(LZMA_FILTER_LZMA2), true);
    dv.setUint32(filtPtr + 8, optPtr, true);
    dv.setBigUint64(filtPtr + FILTER_SIZE, 0xffff_ffff_ffff_ffffn, true);
  };
  init();
  return {
    name: 'xz',
    id: CompressorId.Xz,
    level,
    // mksquashfs records xz options only for a non-default dictionary or BCJ filters.
    options: null,
    engine: 'WebAssembly liblzma',
    compress(data) {
      if (data.length > blockSize) throw new Error('xz: block larger than the block size');
      mod.HEAPU8.set(data, inPtr);
      new DataView(mod.HEAPU8.buffer).setUint32(outPosPtr, 0, true);
      const limit = Math.min(outCap, data.length);
      const ret = mod._lzma_stream_buffer_encode(filtPtr, LZMA_CHECK_CRC32, 0, inPtr, data.length, outPtr, outPosPtr, limit);
      if (ret === LZMA_BUF_ERROR) return null;
      if (ret !== LZMA_OK) throw new OssifyError(`xz: liblzma error ${ret}`);
      const n = new DataView(mod.HEAPU8.buffer).getUint32(outPosPtr, true);
      return n < data.length ? mod.HEAPU8.slice(outPtr, outPtr + n) : null;
    },
    decompress: (d) => lib.streamBufferDecode(d),
  };
}
