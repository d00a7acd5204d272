#include <gtest/gtest.h>
#include <tsumugi/tsumugi.h>

#include <cstring>
#include <filesystem>
#include <fstream>

using namespace tsumugi;
namespace fs = std::filesystem;

namespace {

std::string temp_path(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / "tsumugi_safetensors_test";
  fs::create_directories(dir);
  return (dir / name).string();
}

// A safetensors file from a header string and a body.
std::string file_bytes(const std::string& header, const std::string& body) {
  std::string out(8, '\0');
  const uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  return out + header + body;
}

void expect_io_error(const std::string& bytes, const std::string& fragment) {
  try {
    parse_safetensors(bytes, "bad.safetensors");
    FAIL() << "accepted a malformed file; expected: " << fragment;
  } catch (const IOError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("bad.safetensors"), std::string::npos) << message;
    EXPECT_NE(message.find(fragment), std::string::npos) << message;
  }
}

}  // namespace

TEST(Safetensors, RoundTripsEveryDtypeAndMetadata) {
  StateDict tensors;
  tensors["a.f32"] = from_data<float>({1.5f, -2.0f, 3.25f}, {3, 1});
  tensors["b.f64"] = from_data<double>({1e-300, 2.0});
  tensors["c.bf16"] = from_data<float>({1.0f, -0.5f}).to(DType::bf16);
  tensors["d.f16"] = from_data<float>({65504.0f}).to(DType::f16);
  tensors["e.i64"] = from_data<int64_t>({-1, 1LL << 40});
  tensors["f.u8"] = from_data<uint8_t>({0, 255});
  tensors["g.bool"] = from_data<bool>({true, false});
  tensors["h.empty"] = zeros({0, 4});
  tensors["i.strided"] = arange(0.0, 6.0, 1.0, {.dtype = DType::f32}).view({2, 3}).t();
  const std::string path = temp_path("round_trip.safetensors");
  save_safetensors(path, tensors, {{"format", "pt"}, {"step", "12"}});
  Metadata metadata;
  const StateDict loaded = load_safetensors(path, &metadata);
  EXPECT_EQ(metadata.at("step"), "12");
  ASSERT_EQ(loaded.size(), tensors.size());
  for (const auto& [name, t] : tensors) {
    const Tensor& l = loaded.at(name);
    EXPECT_EQ(l.shape(), t.shape()) << name;
    EXPECT_EQ(l.dtype(), t.dtype()) << name;
    EXPECT_EQ(l.to_vector<double>(), t.to_vector<double>()) << name;
  }
}

TEST(Safetensors, HeaderIsPaddedSoDataIsAligned) {
  const std::string path = temp_path("aligned.safetensors");
  save_safetensors(path, {{"x", zeros({3})}});
  std::ifstream in(path, std::ios::binary);
  uint64_t n = 0;
  in.read(reinterpret_cast<char*>(&n), 8);
  EXPECT_EQ(n % 8, 0u);
}

TEST(Safetensors, ModelStateSurvivesARoundTrip) {
  ModelConfig c{.arch = Arch::llama, .layers = 1, .heads = 2, .dim = 8, .vocab = 11, .context = 8};
  auto a = make_model(c), b = make_model(c);
  a->init_weights(4);
  const std::string path = temp_path("model.safetensors");
  save_safetensors(path, a->state_dict());
  b->load_state_dict(load_safetensors(path));
  for (const auto& [name, t] : a->state_dict()) EXPECT_EQ(t.to_vector<float>(), b->state_dict().at(name).to_vector<float>());
}

TEST(Safetensors, RejectsMalformedFilesWithAClearError) {
  const std::string body(8, '\0');
  const std::string good = R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  EXPECT_NO_THROW(parse_safetensors(file_bytes(good, body), "ok"));
  expect_io_error("abc", "too short");
  expect_io_error(file_bytes(good, body).substr(0, 20), "header length");
  expect_io_error(file_bytes(good, body.substr(0, 4)), "outside the 4 data bytes");
  expect_io_error(file_bytes("{not json", body), "not valid JSON");
  expect_io_error(file_bytes("[1, 2]", ""), "not a JSON object");
  expect_io_error(file_bytes(R"({"x":{"dtype":"F8","shape":[2],"data_offsets":[0,8]}})", body), "unsupported dtype");
  expect_io_error(file_bytes(R"({"x":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", body), "needs 12");
  expect_io_error(file_bytes(R"({"x":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", body), "invalid shape");
  expect_io_error(file_bytes(R"({"x":{"dtype":"F32","shape":[2]}})", body), "lacks");
  expect_io_error(file_bytes(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", body), "outside");
  expect_io_error(file_bytes(R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                             R"("y":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", body),
                  "overlap or gap");
  expect_io_error(file_bytes(R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", body), "trailing bytes");
  expect_io_error(file_bytes(R"({"x":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]}})", body),
                  "overflows");
  // A bool is a byte 0 or 1; any other byte would be an invalid bool in the kernels (fuzz_safetensors).
  expect_io_error(file_bytes(R"({"x":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}})", std::string("\x01\x32", 2)),
                  "not 0 or 1");
  // A header length close to 2^64 must not wrap around.
  std::string huge(8, '\xff');
  expect_io_error(huge + "{}", "header length");
}

TEST(Safetensors, MissingFileNamesThePath) {
  try {
    load_safetensors("/nonexistent/model.safetensors");
    FAIL();
  } catch (const IOError& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/model.safetensors"), std::string::npos);
  }
}
