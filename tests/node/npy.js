// Float32 .npy files for the Node.js peers (run_onnx.js, tfjs_io.js): little-endian '<f4',
// C order; reads format 1.0 and 2.0, writes 1.0.
//
//   const {readNpy, writeNpy} = require('./npy.js');
//   const {data, shape} = readNpy('x.npy');   // data: Float32Array
//   writeNpy('y.npy', data, shape);
'use strict';
const fs = require('fs');

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

module.exports = {readNpy, writeNpy};
