// File helpers for the TF.js peers (pure JS backend: no tfjs-node, so no file:// IO handlers).
//   saveModel(model, dir, {shards, metadata}) -> dir/model.json + dir/group1-shard{i}of{n}.bin
//   loadModel(dir)                            -> tf.LayersModel, through tf.io.fromMemory
//   readNpy(path) / writeNpy(path, tensor)    -> little-endian float32 .npy
'use strict';
const fs = require('fs');
const path = require('path');
const tf = require('@tensorflow/tfjs');

function joinBuffers(buffers) {
  const total = buffers.reduce((n, b) => n + b.byteLength, 0);
  const out = new Uint8Array(total);
  let offset = 0;
  for (const b of buffers) {
    out.set(new Uint8Array(b), offset);
    offset += b.byteLength;
  }
  return out.buffer;
}

async function saveModel(model, dir, options = {}) {
  const shards = options.shards || 1;
  fs.mkdirSync(dir, {recursive: true});
  await model.save(tf.io.withSaveHandler(async (artifacts) => {
    const data = Array.isArray(artifacts.weightData) ? joinBuffers(artifacts.weightData) : artifacts.weightData;
    const bytes = new Uint8Array(data);
    const per = Math.ceil(bytes.length / shards);
    const paths = [];
    for (let i = 0; i < shards; ++i) {
      const name = `group1-shard${i + 1}of${shards}.bin`;
      fs.writeFileSync(path.join(dir, name), bytes.subarray(i * per, Math.min(bytes.length, (i + 1) * per)));
      paths.push(name);
    }
    const json = {
      format: artifacts.format || 'layers-model',
      generatedBy: artifacts.generatedBy,
      convertedBy: null,
      modelTopology: artifacts.modelTopology,
      weightsManifest: [{paths, weights: artifacts.weightSpecs}],
    };
    if (options.metadata) json.userDefinedMetadata = options.metadata;
    fs.writeFileSync(path.join(dir, 'model.json'), JSON.stringify(json));
    return {modelArtifactsInfo: {dateSaved: new Date(), modelTopologyType: 'JSON'}};
  }));
}

async function loadModel(dir) {
  const json = JSON.parse(fs.readFileSync(path.join(dir, 'model.json'), 'utf8'));
  const specs = [];
  const buffers = [];
  for (const group of json.weightsManifest) {
    specs.push(...group.weights);
    for (const p of group.paths) {
      const b = fs.readFileSync(path.join(dir, p));
      buffers.push(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
    }
  }
  const handler = tf.io.fromMemory({
    modelTopology: json.modelTopology,
    weightSpecs: specs,
    weightData: joinBuffers(buffers),
    userDefinedMetadata: json.userDefinedMetadata,
  });
  return tf.loadLayersModel(handler);
}

function readNpy(file) {
  const b = fs.readFileSync(file);
  const headerLength = b.readUInt16LE(8);
  const header = b.toString('latin1', 10, 10 + headerLength);
  if (!header.includes("'<f4'")) throw new Error(`${file}: expected float32 little-endian, header ${header}`);
  if (header.includes("'fortran_order': True")) throw new Error(`${file}: Fortran order`);
  const shape = header.match(/'shape': \(([^)]*)\)/)[1].split(',').map((s) => s.trim()).filter((s) => s).map(Number);
  const start = 10 + headerLength;
  const values = new Float32Array(b.buffer.slice(b.byteOffset + start, b.byteOffset + b.length));
  return tf.tensor(values, shape, 'float32');
}

function writeNpy(file, tensor) {
  const shape = tensor.shape;
  const values = tensor.dataSync();
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${shape.join(', ')}${shape.length === 1 ? ',' : ''}), }`;
  const total = 10 + header.length + 1;
  header += ' '.repeat((64 - (total % 64)) % 64) + '\n';
  const head = Buffer.alloc(10);
  head.write('\x93NUMPY', 0, 'latin1');
  head[6] = 1;
  head[7] = 0;
  head.writeUInt16LE(header.length, 8);
  const body = Buffer.from(new Float32Array(values).buffer);
  fs.writeFileSync(file, Buffer.concat([head, Buffer.from(header, 'latin1'), body]));
}

module.exports = {saveModel, loadModel, readNpy, writeNpy};
