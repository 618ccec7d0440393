#include "kd/data/image_folder.h"

#include <gtest/gtest.h>
#include <stb_image_write.h>

#include "kd/util/fs.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using kd::data::ImageFolderOptions;
using kd::data::read_image_folder;

// Writes `pixels` (row-major, interleaved channels) as an image; the format follows the extension.
void write_image(const fs::path& path, int width, int height, int channels,
                 const std::vector<uint8_t>& pixels) {
  ASSERT_EQ(pixels.size(), static_cast<size_t>(width * height * channels));
  fs::create_directories(path.parent_path());
  const std::string name = path.string();
  const std::string extension = path.extension().string();
  int ok = 0;
  if (extension == ".png")
    ok = stbi_write_png(name.c_str(), width, height, channels, pixels.data(), width * channels);
  if (extension == ".bmp") ok = stbi_write_bmp(name.c_str(), width, height, channels, pixels.data());
  if (extension == ".jpg") ok = stbi_write_jpg(name.c_str(), width, height, channels, pixels.data(), 100);
  ASSERT_TRUE(ok) << "could not write " << name;
}

std::vector<uint8_t> values_of(const torch::Tensor& tensor) {
  const torch::Tensor flat = tensor.contiguous().view(-1);
  return std::vector<uint8_t>(flat.data_ptr<uint8_t>(), flat.data_ptr<uint8_t>() + flat.numel());
}

TEST(ImageFolder, LoadsClassesInSortedOrderWithExactPixels) {
  kd::test::TempDir dir;
  // 2x2 RGB images; classes created in reverse order, files out of order.
  write_image(dir / "dog" / "x.png", 2, 2, 3, {10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120});
  write_image(dir / "cat" / "b.png", 2, 2, 3, std::vector<uint8_t>(12, 200));
  write_image(dir / "cat" / "a.png", 2, 2, 3, std::vector<uint8_t>(12, 7));
  kd::write_file_atomic(dir / "dog" / "readme.txt", "not an image");
  kd::write_file_atomic(dir / "dog" / ".DS_Store", "hidden");

  const auto data = read_image_folder(dir.path(), ImageFolderOptions().height(2).width(2));
  EXPECT_EQ(data.class_names, (std::vector<std::string>{"cat", "dog"}));
  ASSERT_EQ(data.files.size(), 3u);
  EXPECT_EQ(fs::path(data.files[0]).filename(), "a.png");
  EXPECT_EQ(fs::path(data.files[1]).filename(), "b.png");
  EXPECT_EQ(fs::path(data.files[2]).filename(), "x.png");
  EXPECT_EQ(data.skipped_files, 1);  // readme.txt; the hidden file is ignored
  EXPECT_EQ(data.images.sizes(), (std::vector<int64_t>{3, 3, 2, 2}));
  EXPECT_EQ(data.images.scalar_type(), torch::kUInt8);
  EXPECT_EQ(data.labels.scalar_type(), torch::kInt64);
  EXPECT_TRUE(torch::equal(data.labels, torch::tensor({0, 0, 1}, torch::kInt64)));
  EXPECT_EQ(values_of(data.images[0]), std::vector<uint8_t>(12, 7));
  EXPECT_EQ(values_of(data.images[1]), std::vector<uint8_t>(12, 200));
  // Channels first: red plane, green plane, blue plane.
  EXPECT_EQ(values_of(data.images[2]),
            (std::vector<uint8_t>{10, 40, 70, 100, 20, 50, 80, 110, 30, 60, 90, 120}));
}

TEST(ImageFolder, ResizesBilinear) {
  kd::test::TempDir dir;
  write_image(dir / "a" / "up.png", 2, 1, 1, {0, 200});
  // Upsampling 2 -> 4 (align_corners false): source x = (x + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25,
  // clamped to the edge: 0, 50, 150, 200.
  const auto up = read_image_folder(dir.path(), ImageFolderOptions().height(1).width(4));
  EXPECT_EQ(up.images.sizes(), (std::vector<int64_t>{1, 1, 1, 4}));
  EXPECT_EQ(values_of(up.images), (std::vector<uint8_t>{0, 50, 150, 200}));

  kd::test::TempDir dir2;
  write_image(dir2 / "a" / "down.png", 4, 1, 1, {0, 0, 140, 140});
  // Shrinking 4 -> 2 with the antialiased (Pillow) triangle filter of support 2: output 0 is centred
  // at 1.0 and weighs input pixels 0, 1, 2 by 0.75, 0.75, 0.25 (normalised: 3/7, 3/7, 1/7), so
  // 140 / 7 = 20; output 1 mirrors it: 140 * 6 / 7 = 120. torch.nn.functional.interpolate(...,
  // mode='bilinear', antialias=True) gives the same [20, 120].
  const auto down = read_image_folder(dir2.path(), ImageFolderOptions().height(1).width(2));
  EXPECT_EQ(values_of(down.images), (std::vector<uint8_t>{20, 120}));
}

TEST(ImageFolder, ChannelsFromFirstImageOrForced) {
  kd::test::TempDir dir;
  write_image(dir / "a" / "gray.png", 1, 1, 1, {90});
  write_image(dir / "b" / "red.png", 1, 1, 3, {255, 0, 0});
  write_image(dir / "b" / "rgba.png", 1, 1, 4, {1, 2, 3, 4});
  const auto first = read_image_folder(dir.path(), ImageFolderOptions().height(1).width(1));
  EXPECT_EQ(first.images.size(1), 1);  // the first image is grayscale
  // stb's luma: (77 r + 150 g + 29 b) >> 8; red 255 -> 76; (1, 2, 3) -> (77 + 300 + 87) >> 8 = 1.
  EXPECT_EQ(values_of(first.images), (std::vector<uint8_t>{90, 76, 1}));

  const auto rgb = read_image_folder(dir.path(), ImageFolderOptions().height(1).width(1).channels(3));
  EXPECT_EQ(rgb.images.sizes(), (std::vector<int64_t>{3, 3, 1, 1}));
  EXPECT_EQ(values_of(rgb.images), (std::vector<uint8_t>{90, 90, 90, 255, 0, 0, 1, 2, 3}));

  kd::test::TempDir dir2;
  write_image(dir2 / "a" / "rgba.png", 1, 1, 4, {1, 2, 3, 4});
  const auto rgba = read_image_folder(dir2.path(), ImageFolderOptions().height(1).width(1));
  EXPECT_EQ(values_of(rgba.images), (std::vector<uint8_t>{1, 2, 3}));  // alpha dropped
}

TEST(ImageFolder, ReadsBmpAndJpegAndNestedFolders) {
  kd::test::TempDir dir;
  write_image(dir / "a" / "p.bmp", 2, 1, 3, {1, 2, 3, 4, 5, 6});
  write_image(dir / "b" / "deep" / "q.jpg", 8, 8, 3, [] {
    std::vector<uint8_t> pixels;
    for (int i = 0; i < 64; ++i) pixels.insert(pixels.end(), {200, 100, 50});
    return pixels;
  }());
  const auto data = read_image_folder(dir.path(), ImageFolderOptions().height(1).width(2));
  EXPECT_EQ(values_of(data.images[0]), (std::vector<uint8_t>{1, 4, 2, 5, 3, 6}));  // BMP is lossless
  // JPEG is lossy: a flat colour at quality 100 comes back within a couple of levels.
  const torch::Tensor jpeg = data.images[1].to(torch::kInt32);
  const torch::Tensor expected =
      torch::tensor({200, 100, 50}, torch::kInt32).view({3, 1, 1}).expand({3, 1, 2});
  EXPECT_LE((jpeg - expected).abs().max().item<int>(), 2) << jpeg;
  EXPECT_EQ(data.labels[1].item<int64_t>(), 1);
}

TEST(ImageFolder, CorruptImageNamesTheFile) {
  kd::test::TempDir dir;
  write_image(dir / "a" / "good.png", 1, 1, 1, {1});
  kd::write_file_atomic(dir / "a" / "broken.png", "\x89PNG\r\n\x1a\n garbage");
  KD_EXPECT_ERROR(read_image_folder(dir.path(), ImageFolderOptions().channels(1)),
                  "broken.png: cannot decode image");
  // Also when the corrupt file is the first one, read to find the channel count.
  KD_EXPECT_ERROR(read_image_folder(dir.path()), "broken.png: cannot decode image");
}

TEST(ImageFolder, NoClassFolders) {
  kd::test::TempDir dir;
  kd::write_file_atomic(dir / "loose.png", "x");
  KD_EXPECT_ERROR(read_image_folder(dir.path()), "no class sub-folders, expected one folder per class");
}

TEST(ImageFolder, ClassWithoutImages) {
  kd::test::TempDir dir;
  write_image(dir / "a" / "x.png", 1, 1, 1, {1});
  kd::write_file_atomic(dir / "b" / "notes.txt", "x");
  KD_EXPECT_ERROR(read_image_folder(dir.path()),
                  "b: class folder \"b\" has no images, expected .png, .jpg, .jpeg or .bmp files");
}

TEST(ImageFolder, BadRootAndOptions) {
  kd::test::TempDir dir;
  KD_EXPECT_ERROR(read_image_folder(dir / "nope"), "nope: image folder does not exist");
  kd::write_file_atomic(dir / "file", "x");
  KD_EXPECT_ERROR(read_image_folder(dir / "file"),
                  "file: is a file, expected a folder with one sub-folder per class");
  KD_EXPECT_ERROR(read_image_folder(dir.path(), ImageFolderOptions().channels(2)),
                  "channels 2 is not supported, expected 0 (from the first image), 1 (grayscale) or 3 (RGB)");
  KD_EXPECT_ERROR(read_image_folder(dir.path(), ImageFolderOptions().height(0)),
                  "image size 0x32 is not positive");
}

}  // namespace
