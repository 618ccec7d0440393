// kdistill._kdistill: the C++ core for the Python package (python/kdistill/__init__.py, docs/python.md).
// torch's own pybind11 casters (torch/csrc/utils/pybind.h) pass torch.Tensor in and out as at::Tensor:
// the same storage, no copies (the module and python3-torch link the same libtorch). Runs release the
// GIL. A kd::Error reaches Python as kdistill.Error with the command line's one-line message. During a
// run, Ctrl-C and SIGTERM are kdistill's (Python's handler only flags the interpreter, which would not
// look until the run ends): the step finishes, a checkpoint is written and KeyboardInterrupt is raised
// with the message of the command line (resume=True goes on); a second Ctrl-C ends the process.
#include <torch/csrc/utils/pybind.h>

#include <optional>
#include <string>
#include <vector>

#include "kd/kdistill.h"
#include "kd/util/process.h"

namespace py = pybind11;

namespace {

using MaybeTensor = std::optional<at::Tensor>;

at::Tensor or_undefined(const MaybeTensor& t) { return t ? *t : at::Tensor(); }

// A recipe from YAML (or JSON) text and overrides, with arrays in place of its data files when given.
kd::Recipe make_recipe(const std::string& yaml, const std::string& name, const std::string& base_folder,
                       const std::vector<std::string>& overrides, const MaybeTensor& x, const MaybeTensor& y,
                       const MaybeTensor& x_test, const MaybeTensor& y_test) {
  kd::Recipe recipe = kd::parse_recipe(yaml, base_folder, overrides, name);
  if (x || y || x_test || y_test) {
    kd::set_arrays(recipe, or_undefined(x), or_undefined(y), or_undefined(x_test), or_undefined(y_test));
  }
  return recipe;
}

}  // namespace

PYBIND11_MODULE(_kdistill, m) {
  m.doc() = "kdistill's C++ core; use the kdistill package";
  py::register_exception<kd::Error>(m, "Error", PyExc_RuntimeError);
  py::register_exception_translator([](std::exception_ptr thrown) {
    try {
      if (thrown) std::rethrow_exception(thrown);
    } catch (const kd::Interrupted& e) {
      PyErr_SetString(PyExc_KeyboardInterrupt, e.what());
    }
  });

  m.def("version", [] { return std::string(kd::version()); });
  m.def("build_version", [] { return std::string(kd::build_version()); });
  m.def("setup", [](int threads, const std::string& log_level) {
    return kd::setup(kd::SetupOptions().threads(threads).log_level(log_level));
  }, py::arg("threads"), py::arg("log_level"));

  m.def("distill", [](const std::string& yaml, const std::string& name, const std::string& base_folder, const std::vector<std::string>& overrides,
                      const std::string& out, bool force, bool resume, const MaybeTensor& x, const MaybeTensor& y,
                      const MaybeTensor& x_test, const MaybeTensor& y_test) {
    py::gil_scoped_release release;
    kd::ScopedStopHandlers stop_handlers;
    kd::Recipe recipe = make_recipe(yaml, name, base_folder, overrides, x, y, x_test, y_test);
    kd::RunResult result = kd::distill(recipe, kd::RunOptions().out(out).force(force).resume(resume));
    return result.metrics.dump();
  }, py::arg("yaml"), py::arg("name"), py::arg("base_folder"), py::arg("overrides"), py::arg("out"), py::arg("force"),
     py::arg("resume"),
     py::arg("x"), py::arg("y"), py::arg("x_test"), py::arg("y_test"));

  m.def("evaluate", [](const std::string& model, const std::string& yaml, const std::string& name,
                       const std::string& base_folder,
                       const std::vector<std::string>& overrides, int64_t fold, const std::string& teacher,
                       const std::string& input, const MaybeTensor& x, const MaybeTensor& y, const MaybeTensor& x_test,
                       const MaybeTensor& y_test) {
    py::gil_scoped_release release;
    kd::Recipe recipe = make_recipe(yaml, name, base_folder, overrides, x, y, x_test, y_test);
    return kd::evaluate(model, recipe, kd::EvaluateOptions().fold(fold).teacher(teacher).input(input)).dump();
  }, py::arg("model"), py::arg("yaml"), py::arg("name"), py::arg("base_folder"), py::arg("overrides"), py::arg("fold"), py::arg("teacher"),
     py::arg("input"), py::arg("x"), py::arg("y"), py::arg("x_test"), py::arg("y_test"));

  m.def("predict", [](const std::string& model, const at::Tensor& inputs, bool normalized, bool softmax,
                      const std::string& output) {
    py::gil_scoped_release release;
    kd::LoadedModel loaded = kd::load_model(model, output);
    return kd::predict(loaded, inputs, kd::PredictOptions().normalized(normalized).softmax(softmax));
  }, py::arg("model"), py::arg("inputs"), py::arg("normalized"), py::arg("softmax"), py::arg("output"));

  m.def("predict_texts", [](const std::string& model, const std::vector<std::string>& texts, bool softmax,
                            const std::string& output) {
    py::gil_scoped_release release;
    kd::LoadedModel loaded = kd::load_model(model, output);
    return kd::predict(loaded, texts, kd::PredictOptions().softmax(softmax).name("texts"));
  }, py::arg("model"), py::arg("texts"), py::arg("softmax"), py::arg("output"));

  m.def("export", [](const std::string& model, const std::string& format, const std::string& out) {
    py::gil_scoped_release release;
    kd::export_model(model, format, out);
  }, py::arg("model"), py::arg("format"), py::arg("out"));
}
