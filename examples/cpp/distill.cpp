// Distils with kdistill's C++ API (kd/kdistill.h): a recipe, a run, then the student loaded back and
// run on the recipe's first test rows.
//   distill RECIPE [OUT] [key=value ...]     e.g. distill iris.yaml runs/iris distill.epochs=20
#include <kd/kdistill.h>

#include <iostream>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: distill RECIPE [OUT] [key=value ...]\n";
    return 2;
  }
  try {
    kd::setup(kd::SetupOptions().log_level("warn"));
    std::string out = argc > 2 ? argv[2] : "runs/example";
    kd::Recipe recipe = kd::load_recipe(argv[1], std::vector<std::string>(argv + std::min(argc, 3), argv + argc));
    kd::RunResult result = kd::distill(recipe, kd::RunOptions().out(out).force(true));
    std::cout << result.table;
    for (const char* model : {"teacher", "baseline", "student"}) {
      std::cout << model << " test: " << result.metrics["models"][model]["test"].dump() << "\n";
    }

    // The distilled student, as any program would use it: loaded from its file, run on raw inputs.
    kd::LoadedModel student = kd::load_model(out + "/student.kdm");
    torch::Tensor x = torch::rand({4, 4}) * 5;  // four iris-like rows of four measurements
    torch::Tensor p = kd::predict(student, x, kd::PredictOptions().softmax(true));
    std::cout << "student probabilities on 4 rows: " << p.sizes() << ", rows sum to " << p.sum(1) << "\n";
    std::cout << "kdistill " << kd::build_version() << "\n";
  } catch (const kd::Error& e) {
    std::cerr << "distill: " << e.what() << "\n";
    return 2;
  }
  return 0;
}
