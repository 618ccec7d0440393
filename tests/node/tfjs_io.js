// File helpers for the TF.js peers (pure JS backend: no tfjs-node, so no file:// IO handlers).
//   saveModel(model, dir, {shards, metadata}) -> dir/model.json + dir/group1-shard{i}of{n}.bin
//   loadModel(dir)                            -> tf.LayersModel, through tf.io.fromMemory
//   readNpy(path) / writeNpy(path, tensor)    -> little-endian float32 .npy
'use strict';
const fs = require('fs');
const path = require('path');
const tf = require('@tensorflow/tfjs');
const npy = require('./npy.js');

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
  const {data, shape} = npy.readNpy(file);
  return tf.tensor(data, shape, 'float32');
}

function writeNpy(file, tensor) {
  npy.writeNpy(file, tensor.dataSync(), tensor.shape);
}

module.exports = {saveModel, loadModel, readNpy, writeNpy};
