// Runs a TF.js layers model on a .npy input with TF.js itself (tf.loadLayersModel), the peer of
// kdistill's TF.js export:  node run_tfjs.js MODEL_DIR INPUT.npy OUTPUT.npy [METADATA.json]
// The input is given as kdistill feeds it ([N, C, H, W] images are transposed to [N, H, W, C] here
// when the model's input has rank 3); METADATA.json, when given, receives model.json's userDefinedMetadata
// as tf.loadLayersModel returns it.
'use strict';
const fs = require('fs');
const tf = require('@tensorflow/tfjs');
const {loadModel, readNpy, writeNpy} = require('./tfjs_io.js');

async function main() {
  const [dir, input, output, metadata] = process.argv.slice(2);
  const model = await loadModel(dir);
  let x = readNpy(input);
  if (x.rank === 4 && model.inputs[0].shape.length === 4) x = x.transpose([0, 2, 3, 1]);
  writeNpy(output, model.predict(x));
  if (metadata) fs.writeFileSync(metadata, JSON.stringify(model.getUserDefinedMetadata() || null));
}

main().catch((e) => {
  console.error(e.stack || String(e));
  process.exit(1);
});
