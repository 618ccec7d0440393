// kdistill inspect / export / predict: a model file in, a description, another format or outputs out.
#include <iostream>

#include "cli/commands.h"
#include "kd/kdistill.h"
#include "kd/io/describe.h"
#include "kd/export/exporters.h"
#include "kd/data/npy.h"
#include "kd/data/text.h"
#include "kd/io/model_file.h"
#include "kd/train/evaluate.h"
#include "kd/teacher/teacher_input.h"
#include "kd/util/error.h"
#include "kd/util/strings.h"

namespace kd::cli {

namespace {
struct ModelFlags {
  std::string model;
  std::string output;       // which output of a multi-output model
  std::string input_shape;  // for files that do not store it
  bool json = false;
  std::string format;
  std::string out;
  std::string input;
  bool normalized = false;
  bool softmax = false;
};
}  // namespace

void register_model_commands(CLI::App& app, GlobalOptions& global) {
  auto inspect_flags = std::make_shared<ModelFlags>();
  auto* inspect = app.add_subcommand("inspect", "print format, classes, shapes, parameters, MACs and layers of a model");
  inspect->add_option("model", inspect_flags->model, "model file: " + io::model_formats_text())
      ->required();
  inspect->add_option("--input-shape", inspect_flags->input_shape,
                      "one example's shape, e.g. 1,28,28 (for files that do not store it)");
  inspect->add_option("--output", inspect_flags->output, "the logits of a multi-output model: index or name");
  inspect->add_flag("--json", inspect_flags->json, "print JSON instead of text");
  inspect->callback([inspect_flags, &global] {
    global.exit_status = guarded([&] {
      apply_global_options(global);
      auto loaded = io::load_model(inspect_flags->model, inspect_flags->output);
      std::vector<int64_t> shape;
      if (!inspect_flags->input_shape.empty()) shape = io::parse_shape(inspect_flags->input_shape, "--input-shape");
      if (inspect_flags->json) {
        std::cout << io::describe_model_json(inspect_flags->model, loaded, shape).dump(2) << "\n";
      } else {
        std::cout << io::describe_model(inspect_flags->model, loaded, shape);
      }
    });
  });

  auto export_flags = std::make_shared<ModelFlags>();
  std::vector<std::string> formats;
  for (const auto& f : exports::export_formats()) formats.push_back(f.name);
  auto* exporter = app.add_subcommand("export", "write a kdistill model (.kdm) as " + join(formats, ", "));
  exporter->add_option("model", export_flags->model, "a model kdistill trained (.kdm, or a .pt it wrote)")->required();
  exporter->add_option("--format", export_flags->format, join(formats, " | "))->required();
  exporter->add_option("--out", export_flags->out, "output path")->required();
  exporter->callback([export_flags, &global] {
    global.exit_status = guarded([&] {
      apply_global_options(global);
      const auto& format = exports::export_format(export_flags->format, "--format");
      kd::export_model(export_flags->model, format.name, export_flags->out);
      std::cout << "wrote " << export_flags->out << " (" << format.summary << ")\n";
    });
  });

  auto predict_flags = std::make_shared<ModelFlags>();
  auto* predict = app.add_subcommand("predict", "run any loadable model on a .npy array of raw inputs (a text model: on texts)");
  predict->add_option("model", predict_flags->model, "model file: " + io::model_formats_text())
      ->required();
  predict->add_option("--input", predict_flags->input, "inputs [N, ...] as .npy (uint8 pixels are scaled to [0, 1]); a text model: a text "
                      "file, one text a line, or JSON Lines with a \"text\" key")
      ->required();
  predict->add_option("--output", predict_flags->out, "where to write the outputs [N, outputs] as float32 .npy")
      ->required();
  predict->add_option("--logits", predict_flags->output, "the logits of a multi-output model: index or name");
  predict->add_flag("--normalized", predict_flags->normalized,
                    "the inputs are already normalised (do not apply the model's preprocessing.normalize)");
  predict->add_flag("--softmax", predict_flags->softmax,
                    "write class probabilities instead of logits (a model that ends in a softmax is written as it is)");
  predict->callback([predict_flags, &global] {
    global.exit_status = guarded([&] {
      apply_global_options(global);
      auto loaded = io::load_model(predict_flags->model, predict_flags->output);
      auto options = PredictOptions().normalized(predict_flags->normalized).softmax(predict_flags->softmax).name(predict_flags->input);
      torch::Tensor outputs = train::reads_text(loaded)
                                  ? kd::predict(loaded, data::read_text_inputs(predict_flags->input), options)
                                  : kd::predict(loaded, data::read_npy(predict_flags->input), options);
      data::write_npy(predict_flags->out, outputs.contiguous());
      std::cout << "wrote " << predict_flags->out << " (" << outputs.size(0) << " x " << outputs.size(1) << ")\n";
    });
  });
}

}  // namespace kd::cli
