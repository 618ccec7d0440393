// Runs a TF.js layers model on a .npy input with TF.js itself and writes every layer's output, as
// model.layers[i].output gives it (channels last for images):
//
//   node run_tfjs_layers.js MODEL_DIR INPUT.npy OUT_DIR
//
// OUT_DIR/names.json lists the layers (input layers left out), OUT_DIR/<i>.npy holds layer i's output.
// The input is given as kdistill feeds it ([N, C, H, W] images are transposed to [N, H, W, C] here).
'use strict';
const fs = require('fs');
const path = require('path');
const tf = require('@tensorflow/tfjs');
const {loadModel, readNpy, writeNpy} = require('./tfjs_io.js');

async function main() {
  const [dir, input, outDir] = process.argv.slice(2);
  const model = await loadModel(dir);
  let x = readNpy(input);
  if (x.rank === 4 && model.inputs[0].shape.length === 4) x = x.transpose([0, 2, 3, 1]);
  const layers = model.layers.filter((layer) => layer.getClassName() !== 'InputLayer');
  const outputs = tf.model({inputs: model.inputs, outputs: layers.map((layer) => layer.output)}).predict(x);
  fs.mkdirSync(outDir, {recursive: true});
  (Array.isArray(outputs) ? outputs : [outputs]).forEach((y, i) => writeNpy(path.join(outDir, `${i}.npy`), y));
  fs.writeFileSync(path.join(outDir, 'names.json'), JSON.stringify(layers.map((layer) => layer.name)));
}

main().catch((e) => {
  console.error(e.stack || String(e));
  process.exit(1);
});
