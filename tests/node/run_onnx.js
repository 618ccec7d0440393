// Runs an ONNX model with onnxruntime-node on one array and writes the first output.
//
//   node run_onnx.js MODEL.onnx INPUT.npy OUTPUT.npy [PAD_ID]
//   node run_onnx.js MODEL.onnx INPUT.f32 OUTPUT.npy 5,1,28,28   (raw little-endian float32 + shape)
//
// A graph with an input named input_ids (BERT-style exports, kdistill's text exports) gets the array's
// values as int64 token ids, and its other inputs by name as kdistill feeds them: attention_mask (1
// where the id is not PAD_ID, default 0) and token_type_ids (zeros). Any other graph gets the array
// as float32 in its first input. .npy files as npy.js reads and writes them. Exit status 1 with one
// line on error.
'use strict';
const fs = require('fs');
const ort = require('onnxruntime-node');
const {readNpy, writeNpy} = require('./npy.js');

function tokenFeeds(session, x, pad) {
  const ids = BigInt64Array.from(x.data, (v) => BigInt(Math.round(v)));
  const made = {
    input_ids: () => ids,
    attention_mask: () => ids.map((id) => (id === pad ? 0n : 1n)),
    token_type_ids: () => new BigInt64Array(ids.length),
  };
  const feeds = {};
  for (const name of session.inputNames) {
    if (!made[name]) throw new Error(`input ${name} is not input_ids, attention_mask or token_type_ids`);
    feeds[name] = new ort.Tensor('int64', made[name](), x.shape);
  }
  return feeds;
}

async function main() {
  const [model, input, output, extra] = process.argv.slice(2);
  if (!model || !input || !output) throw new Error('usage: node run_onnx.js MODEL.onnx INPUT.npy|INPUT.f32 OUTPUT.npy [PAD_ID|SHAPE]');
  let x;
  if (input.endsWith('.npy')) {
    x = readNpy(input);
  } else {
    if (!extra) throw new Error(`${input}: a raw float32 file needs a shape argument such as 5,1,28,28`);
    const bytes = fs.readFileSync(input);
    x = { data: new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length)),
          shape: extra.split(',').map(Number) };
  }
  const session = await ort.InferenceSession.create(model);
  const feeds = session.inputNames.includes('input_ids')
    ? tokenFeeds(session, x, BigInt(input.endsWith('.npy') && extra ? extra : 0))
    : { [session.inputNames[0]]: new ort.Tensor('float32', x.data, x.shape) };
  const results = await session.run(feeds);
  const y = results[session.outputNames[0]];
  writeNpy(output, y.data, y.dims);
}

main().catch((error) => {
  console.error(String(error.message || error).split('\n')[0]);
  process.exit(1);
});
