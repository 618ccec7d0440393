# `cmake --install BUILD [--prefix P]` and `cpack` (docs/library.md): the program, libkdistill.so and
# its SentencePiece module, the headers, a CMake package (find_package(kdistill) -> kdistill::kd), a
# pkg-config file, the docs and the example recipes.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

# The program finds libkdistill.so beside it in any prefix (bin/../lib/...), as in the .deb.
file(RELATIVE_PATH KD_BIN_TO_LIB ${CMAKE_INSTALL_FULL_BINDIR} ${CMAKE_INSTALL_FULL_LIBDIR})
set_target_properties(kdistill PROPERTIES INSTALL_RPATH "$ORIGIN/${KD_BIN_TO_LIB}")

install(TARGETS kdistill RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(TARGETS kd EXPORT kdistillTargets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS kd_sentencepiece LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}/kdistill)
# Every header of include/kd: the stable API (kd/kdistill.h) includes the others. onnx_tensor.h is left
# out: it needs ONNX's protobuf headers and definitions, and no other header includes it.
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/kd DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
        FILES_MATCHING PATTERN "*.h" PATTERN "onnx_tensor.h" EXCLUDE)

set(KD_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/kdistill)
install(EXPORT kdistillTargets NAMESPACE kdistill:: DESTINATION ${KD_CMAKE_DIR})
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/kdistillConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/kdistillConfig.cmake INSTALL_DESTINATION ${KD_CMAKE_DIR})
# 0.x releases may change the API between minor versions: a request for 0.1 takes 0.1.z only.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/kdistillConfigVersion.cmake COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/kdistillConfig.cmake ${PROJECT_BINARY_DIR}/kdistillConfigVersion.cmake
        DESTINATION ${KD_CMAKE_DIR})

# The .pc file finds the prefix from its own place (${pcfiledir}), so `--prefix` at install time holds.
file(RELATIVE_PATH KD_PC_TO_PREFIX ${CMAKE_INSTALL_FULL_LIBDIR}/pkgconfig ${CMAKE_INSTALL_PREFIX})
string(REGEX REPLACE "/$" "" KD_PC_TO_PREFIX "${KD_PC_TO_PREFIX}")
configure_file(${PROJECT_SOURCE_DIR}/cmake/kdistill.pc.in ${PROJECT_BINARY_DIR}/kdistill.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/kdistill.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)

install(FILES ${PROJECT_SOURCE_DIR}/README.md ${PROJECT_SOURCE_DIR}/CHANGELOG.md DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/docs/ DESTINATION ${CMAKE_INSTALL_DOCDIR} FILES_MATCHING PATTERN "*.md")
install(DIRECTORY ${PROJECT_SOURCE_DIR}/examples/ DESTINATION ${CMAKE_INSTALL_DATADIR}/kdistill/examples
        PATTERN "cpp/build" EXCLUDE)

# cpack -G DEB: one package, kdistill_VERSION_ARCH.deb, its dependencies on Debian's libtorch and the
# other shared libraries found by dpkg-shlibdeps from what the binaries link.
set(CPACK_PACKAGE_NAME kdistill)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "kdistill developers <kdistill@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "knowledge distillation from a large teacher network to a small, fast student")
set(CPACK_PACKAGE_DESCRIPTION "kdistill trains a small student network from a large teacher (PyTorch, TensorFlow.js, ONNX, or one it trains), with a report and deployable files. Command-line program, C++ library (CMake package kdistill) and headers.")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION science)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# The headers include libtorch's, yaml-cpp's, nlohmann-json's, spdlog's and fmt's: a program built on
# the package needs their -dev packages; the program alone does not.
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "libtorch-dev, libyaml-cpp-dev, nlohmann-json3-dev, libspdlog-dev, libfmt-dev, dataset-fashion-mnist")
include(CPack)
