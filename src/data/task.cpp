#include "kd/data/task.h"

#include "kd/util/error.h"
#include "kd/util/strings.h"

namespace kd {

Task parse_task(const std::string& text, const std::string& field) {
  if (text == "classification") return Task::classification;
  if (text == "regression") return Task::regression;
  fail("{}: {} is not a task, expected classification or regression", field, quote(text));
}

std::string to_string(Task task) {
  return task == Task::classification ? "classification" : "regression";
}

}  // namespace kd
