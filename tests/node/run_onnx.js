// Runs an ONNX model with onnxruntime-node on one array and writes the first output.
//
//   node run_onnx.js MODEL.onnx INPUT.npy OUTPUT.npy
//   node run_onnx.js MODEL.onnx INPUT.f32 OUTPUT.npy 5,1,28,28   (raw little-endian float32 + shape)
//
// .npy files: float32 ('<f4'), C order, format 1.0 or 2.0. Exit status 1 with one line on error.
'use strict';
const fs = require('fs');
const ort = require('onnxruntime-node');

function readNpy(path) {
  const bytes = fs.readFileSync(path);
  if (bytes.toString('latin1', 0, 6) !== '\x93NUMPY') throw new Error(`${path}: not a .npy file`);
  const major = bytes[6];
  const headerLength = major === 1 ? bytes.readUInt16LE(8) : bytes.readUInt32LE(8);
  const start = major === 1 ? 10 : 12;
  const header = bytes.toString('latin1', start, start + headerLength);
  if (!/'descr':\s*'<f4'/.test(header)) throw new Error(`${path}: expected dtype <f4, header ${header.trim()}`);
  if (/'fortran_order':\s*True/.test(header)) throw new Error(`${path}: Fortran order is not supported`);
  const shapeText = /'shape':\s*\(([^)]*)\)/.exec(header)[1];
  const shape = shapeText.split(',').map((s) => s.trim()).filter((s) => s.length > 0).map(Number);
  const offset = start + headerLength;
  const data = new Float32Array(bytes.buffer.slice(bytes.byteOffset + offset, bytes.byteOffset + bytes.length));
  return { data, shape };
}

function writeNpy(path, data, shape) {
  const shapeText = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(', ')})`;
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': ${shapeText}, }`;
  const total = 10 + header.length + 1;
  header += ' '.repeat((64 - (total % 64)) % 64) + '\n';
  const prefix = Buffer.alloc(10);
  prefix.write('\x93NUMPY', 0, 'latin1');
  prefix[6] = 1;
  prefix[7] = 0;
  prefix.writeUInt16LE(header.length, 8);
  const body = Buffer.from(new Float32Array(data).buffer);
  fs.writeFileSync(path, Buffer.concat([prefix, Buffer.from(header, 'latin1'), body]));
}

async function main() {
  const [model, input, output, shapeArg] = process.argv.slice(2);
  if (!model || !input || !output) throw new Error('usage: node run_onnx.js MODEL.onnx INPUT.npy|INPUT.f32 OUTPUT.npy [SHAPE]');
  let x;
  if (input.endsWith('.npy')) {
    x = readNpy(input);
  } else {
    if (!shapeArg) throw new Error(`${input}: a raw float32 file needs a shape argument such as 5,1,28,28`);
    const bytes = fs.readFileSync(input);
    x = { data: new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length)),
          shape: shapeArg.split(',').map(Number) };
  }
  const session = await ort.InferenceSession.create(model);
  const feeds = { [session.inputNames[0]]: new ort.Tensor('float32', x.data, x.shape) };
  const results = await session.run(feeds);
  const y = results[session.outputNames[0]];
  writeNpy(output, y.data, y.dims);
}

main().catch((error) => {
  console.error(String(error.message || error).split('\n')[0]);
  process.exit(1);
});
