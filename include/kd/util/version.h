// kdistill's version: what `kdistill --version` prints, metrics.json and the exports record.
#pragma once

namespace kd {

// The release, "0.1.0" (the project's version in CMakeLists.txt).
const char* version();
// The release and the source it was built from: "0.1.0 (git 6b6504b)", "0.1.0 (git v0.1.0-3-g6b6504b-dirty)"
// with uncommitted changes; the release alone when built outside a git checkout.
const char* build_version();

}  // namespace kd
