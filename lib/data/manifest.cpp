// manifest.json: the list of a split's shards, with counts and checksums.
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include <tsumugi/data/shard.h>

#include "atomic_file.h"
#include "core/check.h"
#include "core/io/json_integer.h"

namespace tsumugi {

namespace {
constexpr const char* kManifestFormat = "tsumugi-shards";
}

ShardManifest ShardManifest::load(const std::string& dir) {
  const std::string path = (std::filesystem::path(dir) / "manifest.json").string();
  std::ifstream file(path);
  TSU_CHECK(file.good(), IOError, "[shards] {}: missing (is {} the output of `tsumugi prep`, a train/ or val/ folder?)",
            path, dir);
  std::stringstream text;
  text << file.rdbuf();
  ShardManifest manifest;
  try {
    const auto json = nlohmann::json::parse(text.str());
    TSU_CHECK(json.value("format", "") == kManifestFormat, IOError, "[shards] {}: format is not \"{}\"", path,
              kManifestFormat);
    const auto field = [&](std::string_view key) { return fmt::format("[shards] {}: {}", path, key); };
    const auto version = json.contains("version") ? json_integer<uint64_t>(json.at("version"), field("version")) : 0;
    TSU_CHECK(version == kShardFormatVersion, IOError, "[shards] {}: version {} is not the supported {}", path, version,
              kShardFormatVersion);
    manifest.split = json.at("split").get<std::string>();
    manifest.tokenizer_sha256 = json.at("tokenizer_sha256").get<std::string>();
    manifest.vocab_size = json_integer<uint64_t>(json.at("vocab_size"), field("vocab_size"));
    manifest.eos_id = json_integer<int32_t>(json.at("eos_id"), field("eos_id"));
    manifest.token_dtype = json.at("token_dtype").get<std::string>();
    manifest.tokens = json_integer<uint64_t>(json.at("tokens"), field("tokens"));
    manifest.documents = json_integer<uint64_t>(json.at("documents"), field("documents"));
    manifest.source_bytes = json_integer<uint64_t>(json.at("source_bytes"), field("source_bytes"));
    TSU_CHECK(json.at("shards").is_array(), IOError, "[shards] {}: shards is not a list", path);
    for (const auto& entry : json.at("shards")) {
      const auto count = [&](const char* key) { return json_integer<uint64_t>(entry.at(key), field(key)); };
      manifest.shards.push_back({entry.at("file").get<std::string>(), count("tokens"), count("documents"),
                                 count("source_bytes"), count("file_bytes"), entry.at("checksum").get<std::string>()});
      // Shards lie beside manifest.json: a name cannot lead out of the folder.
      const std::string& file = manifest.shards.back().file;
      TSU_CHECK(!file.empty() && file != "." && file != ".." && file.find('/') == std::string::npos &&
                    file.find('\0') == std::string::npos,
                IOError, "[shards] {}: shard file '{}' is not a plain file name in this folder", path, file);
    }
  } catch (const nlohmann::json::exception& e) {
    TSU_FAIL(IOError, "[shards] {}: malformed manifest: {}", path, e.what());
  }
  return manifest;
}

void ShardManifest::save(const std::string& dir) const {
  nlohmann::ordered_json json;
  json["format"] = kManifestFormat;
  json["version"] = kShardFormatVersion;
  json["split"] = split;
  json["tokenizer_sha256"] = tokenizer_sha256;
  json["vocab_size"] = vocab_size;
  json["eos_id"] = eos_id;
  json["token_dtype"] = token_dtype;
  json["tokens"] = tokens;
  json["documents"] = documents;
  json["source_bytes"] = source_bytes;
  json["shards"] = nlohmann::ordered_json::array();
  for (const auto& shard : shards) {
    json["shards"].push_back({{"file", shard.file},
                              {"tokens", shard.tokens},
                              {"documents", shard.documents},
                              {"source_bytes", shard.source_bytes},
                              {"file_bytes", shard.file_bytes},
                              {"checksum", shard.checksum}});
  }
  // Written last, whole or not at all: a split folder with a manifest.json has all its shards.
  data_internal::write_file_atomically((std::filesystem::path(dir) / "manifest.json").string(), json.dump(2) + "\n",
                                       "shards");
}

}  // namespace tsumugi
