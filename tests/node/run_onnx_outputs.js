// Runs an ONNX model with onnxruntime-node on one .npy array and writes every graph output:
//
//   node run_onnx_outputs.js MODEL.onnx INPUT.npy OUT_DIR
//
// OUT_DIR/names.json lists the outputs in order, OUT_DIR/<i>.npy holds output i. With a graph whose
// intermediate values were added as outputs, this is what onnxruntime computes at those values.
'use strict';
const fs = require('fs');
const path = require('path');
const ort = require('onnxruntime-node');
const {readNpy, writeNpy} = require('./npy.js');

async function main() {
  const [model, input, outDir] = process.argv.slice(2);
  if (!model || !input || !outDir) throw new Error('usage: node run_onnx_outputs.js MODEL.onnx INPUT.npy OUT_DIR');
  const x = readNpy(input);
  const session = await ort.InferenceSession.create(model);
  const results = await session.run({[session.inputNames[0]]: new ort.Tensor('float32', x.data, x.shape)});
  fs.mkdirSync(outDir, {recursive: true});
  session.outputNames.forEach((name, i) => writeNpy(path.join(outDir, `${i}.npy`), results[name].data, results[name].dims));
  fs.writeFileSync(path.join(outDir, 'names.json'), JSON.stringify(session.outputNames));
}

main().catch((error) => {
  console.error(String(error.message || error).split('\n')[0]);
  process.exit(1);
});
