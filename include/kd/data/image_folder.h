// Images in one sub-folder per class (the torchvision ImageFolder layout):
//
//   root/cat/001.png, root/cat/002.jpg, root/dog/a.bmp, ...
//
// Classes are the sub-folder names in sorted order (label i = class_names[i]); each
// class's images are found recursively and taken in sorted path order, so a load is
// deterministic. PNG, JPEG and BMP are decoded (stb_image) and resized to
// height x width with bilinear interpolation (antialiased when shrinking, as Pillow
// and torchvision do). Other files are skipped and counted; hidden entries are ignored.
//
//   auto data = kd::data::read_image_folder("pets", kd::data::ImageFolderOptions().height(64).width(64));
//   data.images  // uint8 [N, C, 64, 64];  data.labels  // int64 [N]
#pragma once

#include <torch/arg.h>
#include <torch/torch.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace kd::data {

struct ImageFolderOptions {
  TORCH_ARG(int64_t, height) = 32;
  TORCH_ARG(int64_t, width) = 32;
  // 0: from the first image (grayscale, with or without alpha, -> 1; colour -> 3);
  // 1 or 3 converts every image to grayscale or RGB. Alpha is dropped.
  TORCH_ARG(int64_t, channels) = 0;
};

struct ImageFolder {
  torch::Tensor images;                  // uint8 [N, C, H, W]
  torch::Tensor labels;                  // int64 [N], indices into class_names
  std::vector<std::string> class_names;  // sorted sub-folder names
  std::vector<std::string> files;        // the N image paths, in the order of `images`
  int64_t skipped_files = 0;             // files that are not PNG, JPEG or BMP by their extension
};

// kd::Error naming the path when the folder has no class sub-folders, a class has
// no images, or an image cannot be decoded.
// A file read_image_folder reads: a .png, .jpg, .jpeg or .bmp name (any case).
bool has_image_extension(const std::filesystem::path& path);

ImageFolder read_image_folder(const std::filesystem::path& root,
                              const ImageFolderOptions& options = ImageFolderOptions());

}  // namespace kd::data
