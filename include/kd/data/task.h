// What the models predict: a class (logits over C classes) or real values.
#pragma once

#include <string>

namespace kd {

enum class Task { classification, regression };

// "classification" | "regression"; kd::Error naming `field` otherwise.
Task parse_task(const std::string& text, const std::string& field);
std::string to_string(Task task);

}  // namespace kd
