// Writes the seed corpora of the fuzzers (tests/fuzz/corpus/<fuzzer>/) with the library's own
// writers, plus a few hand-made edge cases. Usage: fuzz_make_seeds tests/fuzz/corpus
// The tokenizer seed is trained only when missing, so that the checkpoint seeds, which record its
// SHA-256, stay valid. Regression inputs (regress-*) are kept by hand and never rewritten here.
#include <tsumugi/core/ops.h>
#include <tsumugi/core/safetensors.h>

#include <zlib.h>

#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>

#include "fuzz/fuzz_util.h"
#include "tokenizer/tiny_tokenizer.h"

namespace {

namespace fs = std::filesystem;
using namespace tsumugi;

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

void seed(const fs::path& dir, const std::string& name, const std::string& bytes) {
  fs::create_directories(dir);
  fuzz::write_file(dir / name, bytes);
}

void safetensors_seeds(const fs::path& out) {
  const fs::path scratch = fuzz::scratch_dir() / "st";
  fs::create_directories(scratch);
  Generator gen(3);
  StateDict all;
  all["f32"] = randn({2, 3}, gen);
  all["f64"] = randn({3}, gen).to(DType::f64);
  all["bf16"] = randn({4}, gen).to(DType::bf16);
  all["f16"] = randn({2, 2}, gen).to(DType::f16);
  all["i32"] = arange(0, 5, 1, {.dtype = DType::i32});
  all["i64"] = arange(0, 3, 1, {.dtype = DType::i64});
  all["u16"] = full({2}, 7, {.dtype = DType::u16});
  all["u32"] = full({2}, 9, {.dtype = DType::u32});
  all["u8"] = full({3}, 255, {.dtype = DType::u8});
  all["bool"] = full({2}, 1, {.dtype = DType::boolean});
  all["scalar"] = full({}, 1.5f);
  all["empty"] = zeros({0, 4});
  save_safetensors((scratch / "all.safetensors").string(), all, {{"format", "pt"}, {"note", "日本語"}});
  seed(out, "all-dtypes.safetensors", read_file(scratch / "all.safetensors"));
  save_safetensors((scratch / "none.safetensors").string(), {});
  seed(out, "empty.safetensors", read_file(scratch / "none.safetensors"));
  const std::string header = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  std::string bytes(8, '\0');
  const uint64_t length = header.size();
  std::memcpy(bytes.data(), &length, 8);
  seed(out, "truncated.safetensors", bytes + header);
}

void shard_seeds(const fs::path& shard_out, const fs::path& manifest_out) {
  const fs::path small = fuzz::scratch_dir() / "train";
  fuzz::write_shard_fixture(small.string());
  seed(shard_out, "shard-u16.h5", read_file(small / "shard-00000.h5"));
  seed(manifest_out, "manifest.json", read_file(small / "manifest.json"));
  const fs::path wide = fuzz::scratch_dir() / "wide";
  fuzz::write_shard_fixture(wide.string(), 70000);
  seed(shard_out, "shard-u32.h5", read_file(wide / "shard-00000.h5"));
  std::string escaping = read_file(small / "manifest.json");
  escaping.replace(escaping.find("shard-00000.h5"), 14, "../../train/shard-00000.h5");
  seed(manifest_out, "file-outside-folder.json", escaping);
  seed(manifest_out, "not-an-object.json", "[1, 2, 3]\n");
}

std::string gzip(const std::string& text) {
  uLongf size = compressBound(text.size());
  std::string out(size, '\0');
  compress2(reinterpret_cast<Bytef*>(out.data()), &size, reinterpret_cast<const Bytef*>(text.data()), text.size(), 6);
  out.resize(size);
  return out;
}

void document_seeds(const fs::path& out) {
  // First byte: bit 0 jsonl(0)/txt(1); bits 1-2 plain/gz/zst/raw; bit 3 skip; bit 4 raw as .zst.
  const std::string jsonl =
      "{\"text\": \"東京の天気は晴れです。\\n二行目\", \"source\": \"a\"}\n"
      "\n"
      "{\"id\": 3, \"meta\": {\"x\": [1, 2.5e3, true, null]}, \"text\": \"\\u3042\\ud83d\\ude00 \\\"q\\\"\"}\r\n"
      "{\"text\": \"東京の天気は晴れです。\"}\n";
  const std::string txt = "一つ目の文書です。\n二行目。\n\n\r\n二つ目の document.\n";
  seed(out, "jsonl", std::string(1, '\x00') + jsonl);
  seed(out, "txt", std::string(1, '\x01') + txt);
  seed(out, "jsonl-gz", std::string(1, '\x02') + jsonl);
  seed(out, "txt-zst", std::string(1, '\x05') + txt);
  seed(out, "jsonl-skip-invalid-utf8", std::string(1, '\x08') + "{\"text\": \"ok\"}\n{\"text\": \"bad \xC3\x28 byte\"}\n"
                                           "{\"text\": \"overlong \xE0\x80\xAF\"}\n{\"text\": \"surrogate \xED\xA0\x80\"}\n");
  seed(out, "txt-invalid-utf8", std::string(1, '\x01') + "valid\n\nbad \xF5\x80\x80\x80 lead\n");
  seed(out, "jsonl-bad-escapes", std::string(1, '\x08') + "{\"text\": \"\\ud800 lone\"}\n{\"text\": \"\\x\"}\n"
                                     "{\"text\": 5}\n{\"text\": \"a\"} trailing\n{\"text\": \"\\u12\"}\n");
  seed(out, "raw-zlib-as-gz", std::string(1, '\x06') + gzip(jsonl));
}

void config_seeds(const fs::path& out) {
  for (const auto& entry : fs::directory_iterator(fs::path(TSUMUGI_SOURCE_DIR) / "configs")) {
    if (entry.path().extension() == ".toml") seed(out, entry.path().filename().string(), read_file(entry.path()));
  }
  seed(out, "defaults.toml", config_to_toml(TrainConfig{}));
  seed(out, "overrides.toml",
       "[model]\narch = \"llama\"\nlayers = 2\nheads = 4\nkv_heads = 2\ndim = 64\n[data]\nseq_len = 32\n"
       "[model]\n#--set\ntrain.lr=3e-4\ndata.train=some/path\nmodel.dim=128\nlearning_rate=1\neval.prompt=\"東京\"\n");
  seed(out, "wrong-types.toml", "[train]\nsteps = \"ten\"\nlr = true\n[log]\nevery = 1.5\n");
}

void checkpoint_seeds(const fs::path& out) {
  const std::string trainer_json = fuzz::write_checkpoint_fixture(fuzz::scratch_dir() / "ckpt");
  seed(out, "trainer.json", trainer_json);
  seed(out, "latest-link", "@step-00000007\n" + trainer_json);
  seed(out, "latest-link-outside", "@../../run/checkpoints/step-00000007\n" + trainer_json);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s tests/fuzz/corpus\n", argv[0]);
    return 2;
  }
  const fs::path out = argv[1];
  try {
    const fs::path model = out / "fuzz_tokenizer" / "tiny.model";
    if (!fs::exists(model)) {
      fs::create_directories(model.parent_path());
      const fs::path prefix = fuzz::scratch_dir() / "tiny";
      testing::train_tiny_tokenizer(prefix.string(), 400);
      fs::copy_file(prefix.string() + ".model", model);
    }
    safetensors_seeds(out / "fuzz_safetensors");
    shard_seeds(out / "fuzz_shard_file", out / "fuzz_manifest");
    // fuzz_shard reads its input as choices (FuzzedDataProvider): any bytes are a shard.
    std::mt19937 random(7);
    for (int i = 0; i < 4; ++i) {
      std::string bytes(64 << i, '\0');
      for (char& b : bytes) b = static_cast<char>(random());
      seed(out / "fuzz_shard", "choices-" + std::to_string(i), bytes);
    }
    document_seeds(out / "fuzz_documents");
    config_seeds(out / "fuzz_config");
    checkpoint_seeds(out / "fuzz_checkpoint");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fuzz_make_seeds: %s\n", e.what());
    return 1;
  }
  std::printf("seeds written under %s\n", out.c_str());
  return 0;
}
