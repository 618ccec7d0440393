# Writes OUT, a C++ source defining kd::version() (VERSION, the project's) and kd::build_version()
# (VERSION and `git describe` of SOURCE_DIR, when it is a git checkout). Run at configure time and
# before every build (target kd_version); OUT is rewritten only when its text changes, so a build of an
# unchanged tree compiles nothing.
execute_process(COMMAND git -C "${SOURCE_DIR}" describe --tags --always --dirty
                OUTPUT_VARIABLE describe OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE status)
if(status EQUAL 0 AND NOT describe STREQUAL "")
  set(build "${VERSION} (git ${describe})")
else()
  set(build "${VERSION}")
endif()
set(text "// Written by cmake/version.cmake at build time.\n#include \"kd/util/version.h\"\n\nnamespace kd {\n\nconst char* version() { return \"${VERSION}\"; }\nconst char* build_version() { return \"${build}\"; }\n\n}  // namespace kd\n")
set(old "")
if(EXISTS "${OUT}")
  file(READ "${OUT}" old)
endif()
if(NOT old STREQUAL text)
  file(WRITE "${OUT}" "${text}")
endif()
