#include "kd/data/image_folder.h"

#include <ATen/Parallel.h>
#include <stb_image.h>

#include <algorithm>
#include <cstdlib>
#include <memory>

#include "kd/util/error.h"
#include "kd/util/fs.h"
#include "kd/util/strings.h"

namespace kd::data {

namespace fs = std::filesystem;

bool has_image_extension(const fs::path& path) {
  const std::string extension = to_lower(path.extension().string());
  return extension == ".png" || extension == ".jpg" || extension == ".jpeg" || extension == ".bmp";
}

namespace {

bool is_hidden(const fs::path& path) { return starts_with(path.filename().string(), "."); }

// Sorted image files under `folder` (recursively); counts the other files in `skipped`.
std::vector<fs::path> list_images(const fs::path& folder, int64_t& skipped) {
  std::vector<fs::path> images;
  std::error_code ec;
  auto it = fs::recursive_directory_iterator(folder, fs::directory_options::follow_directory_symlink, ec);
  if (ec) fail("{}: cannot list folder: {}", folder.string(), ec.message());
  for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (is_hidden(it->path())) {
      if (it->is_directory()) it.disable_recursion_pending();
      continue;
    }
    if (!it->is_regular_file()) continue;
    if (has_image_extension(it->path())) {
      images.push_back(it->path());
    } else {
      ++skipped;
    }
  }
  if (ec) fail("{}: cannot list folder: {}", folder.string(), ec.message());
  std::sort(images.begin(), images.end());
  return images;
}

// The largest image decoded: 32 Mi pixels (e.g. 8192 x 4096; 384 MiB as float RGB for the resize).
constexpr int64_t kMaxImagePixels = int64_t{1} << 25;
// The longest side: a 1 x 16,777,217 BMP (found by fuzzing) made the antialiased resize to a few pixels
// allocate 2 GB for its weights.
constexpr int kMaxImageSide = 1 << 16;

// The components of the image in `bytes` (an image file), from its header. A header may claim any
// size: it is checked here, before stb_image allocates for it (a top-down BMP's height is negative in
// its header).
int header_components(const std::string& bytes, const fs::path& file) {
  if (bytes.size() > static_cast<size_t>(INT32_MAX)) fail("{}: image file over 2 GiB", file.string());
  int width = 0, height = 0, components = 0;
  if (!stbi_info_from_memory(reinterpret_cast<const stbi_uc*>(bytes.data()), static_cast<int>(bytes.size()), &width,
                             &height, &components)) {
    fail("{}: cannot decode image: {}", file.string(), stbi_failure_reason());
  }
  const int64_t w = std::abs(int64_t{width}), h = std::abs(int64_t{height});
  if (w * h > kMaxImagePixels || std::max(w, h) > kMaxImageSide) {
    fail("{}: image of {} x {} pixels, more than the {} Mi pixels or {} a side kdistill decodes", file.string(), w, h,
         kMaxImagePixels >> 20, kMaxImageSide);
  }
  return components;
}

// The number of channels to load when the options leave it to the first image.
int64_t channels_of(const fs::path& file) { return header_components(read_file(file), file) <= 2 ? 1 : 3; }

// Decodes `file` to `channels` channels and writes it, resized, into `out` (uint8 [C, H, W]).
void load_image(const fs::path& file, int64_t channels, torch::Tensor out) {
  const std::string bytes = read_file(file);
  header_components(bytes, file);
  int width = 0, height = 0, components = 0;
  std::unique_ptr<stbi_uc, decltype(&stbi_image_free)> pixels(
      stbi_load_from_memory(reinterpret_cast<const stbi_uc*>(bytes.data()), static_cast<int>(bytes.size()),
                            &width, &height, &components, static_cast<int>(channels)),
      &stbi_image_free);
  if (!pixels) fail("{}: cannot decode image: {}", file.string(), stbi_failure_reason());
  if (width < 1 || height < 1) fail("{}: image of {} x {} pixels: nothing to decode", file.string(), width, height);
  torch::Tensor image =
      torch::from_blob(pixels.get(), {height, width, channels}, torch::kUInt8).permute({2, 0, 1});
  if (height == out.size(1) && width == out.size(2)) {
    out.copy_(image);
    return;
  }
  namespace F = torch::nn::functional;
  torch::Tensor resized = F::interpolate(image.unsqueeze(0).to(torch::kFloat32),
                                         F::InterpolateFuncOptions()
                                             .size(std::vector<int64_t>{out.size(1), out.size(2)})
                                             .mode(torch::kBilinear)
                                             .align_corners(false)
                                             .antialias(true));
  out.copy_(resized.squeeze(0).round().clamp(0, 255));
}

}  // namespace

ImageFolder read_image_folder(const fs::path& root, const ImageFolderOptions& options) {
  const std::string name = root.string();
  if (options.height() < 1 || options.width() < 1) {
    fail("{}: image size {}x{} is not positive", name, options.height(), options.width());
  }
  if (options.channels() != 0 && options.channels() != 1 && options.channels() != 3) {
    fail("{}: channels {} is not supported, expected 0 (from the first image), 1 (grayscale) or 3 (RGB)",
         name, options.channels());
  }
  std::error_code ec;
  if (!fs::exists(root, ec)) fail("{}: image folder does not exist", name);
  if (!fs::is_directory(root, ec))
    fail("{}: is a file, expected a folder with one sub-folder per class", name);

  ImageFolder result;
  std::vector<fs::path> class_folders;
  for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
    if (is_hidden(it->path())) continue;
    if (it->is_directory()) {
      class_folders.push_back(it->path());
    } else if (it->is_regular_file()) {
      ++result.skipped_files;  // files beside the class folders belong to no class
    }
  }
  if (ec) fail("{}: cannot list folder: {}", name, ec.message());
  if (class_folders.empty()) {
    fail(
        "{}: no class sub-folders, expected one folder per class holding its images ({}/<class>/<image>.png)",
        name, name);
  }
  std::sort(class_folders.begin(), class_folders.end());

  std::vector<fs::path> files;
  std::vector<int64_t> labels;
  for (size_t label = 0; label < class_folders.size(); ++label) {
    const std::vector<fs::path> images = list_images(class_folders[label], result.skipped_files);
    if (images.empty()) {
      fail("{}: class folder {} has no images, expected .png, .jpg, .jpeg or .bmp files",
           class_folders[label].string(), quote(class_folders[label].filename().string()));
    }
    result.class_names.push_back(class_folders[label].filename().string());
    files.insert(files.end(), images.begin(), images.end());
    labels.insert(labels.end(), images.size(), static_cast<int64_t>(label));
  }

  const int64_t channels = options.channels() != 0 ? options.channels() : channels_of(files.front());
  const auto count = static_cast<int64_t>(files.size());
  result.images = torch::empty({count, channels, options.height(), options.width()}, torch::kUInt8);
  result.labels = torch::tensor(labels, torch::kInt64);
  // Decoding dominates; images are independent. Each failure is kept by index so that
  // the error reported is the first bad file in sorted order, whatever the thread timing.
  std::vector<std::string> errors(files.size());
  at::parallel_for(0, count, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      try {
        load_image(files[i], channels, result.images[i]);
      } catch (const Error& e) {
        errors[i] = e.what();
      }
    }
  });
  for (const auto& error : errors) {
    if (!error.empty()) throw Error(error);
  }
  for (const auto& file : files) result.files.push_back(file.string());
  return result;
}

}  // namespace kd::data
