// Exports a zoo model as a TF.js layers model: DIR/model.json (Keras Functional topology) and
// DIR/group1-shard1of1.bin (float32 weights), loadable by tf.loadLayersModel (@tensorflow/tfjs 4.x)
// and by kdistill's own TfjsModel.
//
//   layout: images are channels last, input [N, H, W, C]: conv kernels are transposed to
//           [kh, kw, cin, cout], and the Dense after a Flatten takes TF's H, W, C order.
//           Flat input stays [N, F] (cnn/resnet reshape it to [s, s, 1] as the zoo does).
//   layers: one Keras layer per zoo step, named as the zoo's state ("fc1", "conv1_bn",
//           "layer2_0_conv1", ...); stride-2 convs get an explicit ZeroPadding2D, because TF's "same"
//           pads asymmetrically where PyTorch pads 1 on each side.
//   preprocessing: the data's normalisation is folded in where that is exact, so the model takes raw
//           inputs: into the first Dense (mlp, linear: any scope), or as a leading 1x1 DepthwiseConv2D
//           "normalize" (cnn, resnet: channel or global scope). Per-feature (per-pixel) normalisation
//           before a zero-padded conv cannot be folded exactly: those models take normalised inputs.
//           Categorical encoding (tabular data) is never folded: inputs are the encoded features.
//           Regression outputs stay in normalised target units (see preprocessing.target_normalize).
//   metadata: userDefinedMetadata = {"kdistill": info.to_json() + "tfjs_input": {layout, shape,
//           normalized, normalization}}, so a user's code can read what the inputs must be.
//
//   export_tfjs(*student, info, "out/student.tfjs");
//   // node: const m = await tf.loadLayersModel(handler); m.predict(tf.zeros([1, 28, 28, 1]))
#pragma once

#include <string>

#include "kd/io/model_file.h"
#include "kd/models/model.h"

namespace kd::exports {

// Writes the folder atomically (a temporary folder renamed into place; an existing folder is
// replaced). kd::Error naming `dir` for a model that is not a zoo model or an unwritable place.
void export_tfjs(models::Model& model, const io::ModelInfo& info, const std::string& dir);

}  // namespace kd::exports
