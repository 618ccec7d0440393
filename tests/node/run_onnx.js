// Runs an ONNX model with onnxruntime-node on one array and writes the first output.
//
//   node run_onnx.js MODEL.onnx INPUT.npy OUTPUT.npy
//   node run_onnx.js MODEL.onnx INPUT.f32 OUTPUT.npy 5,1,28,28   (raw little-endian float32 + shape)
//
// A model whose input is input_ids (kdistill's text exports) gets the array's values as int64 ids.
// .npy files as npy.js reads and writes them. Exit status 1 with one line on error.
'use strict';
const fs = require('fs');
const ort = require('onnxruntime-node');
const {readNpy, writeNpy} = require('./npy.js');

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
  // Text models take token ids as int64 under the name BERT exports use; the array holds them as floats.
  const name = session.inputNames[0];
  const tensor = name === 'input_ids'
    ? new ort.Tensor('int64', BigInt64Array.from(x.data, (v) => BigInt(Math.round(v))), x.shape)
    : new ort.Tensor('float32', x.data, x.shape);
  const feeds = { [name]: tensor };
  const results = await session.run(feeds);
  const y = results[session.outputNames[0]];
  writeNpy(output, y.data, y.dims);
}

main().catch((error) => {
  console.error(String(error.message || error).split('\n')[0]);
  process.exit(1);
});
