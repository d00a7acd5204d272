// Fuzzes training recipes: the input is TOML text, optionally followed by a line "#--set" and
// then one `--set section.key=value` override per line. A recipe that parses must survive the
// trip through config_to_toml (what trainer.json stores and a resume parses again) unchanged.
#include <tsumugi/train/config.h>

#include <cstdio>
#include <optional>
#include <span>
#include <vector>

#include <algorithm>

#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace tsumugi;
  const std::string_view input = fuzz::as_text(data, size);
  constexpr std::string_view kSeparator = "\n#--set\n";
  const size_t split = input.find(kSeparator);
  const std::string toml(input.substr(0, split));
  std::vector<std::string> overrides;
  if (split != std::string_view::npos) {
    std::string_view rest = input.substr(split + kSeparator.size());
    while (!rest.empty()) {
      const size_t end = std::min(rest.find('\n'), rest.size());
      overrides.emplace_back(rest.substr(0, end));
      rest.remove_prefix(std::min(end + 1, rest.size()));
    }
  }
  std::optional<TrainConfig> config;
  fuzz::expect_only_tsumugi_errors([&] { config = parse_config(toml, "fuzz.toml", overrides); });
  // Each alone too (parse_config stops at the first bad one); a few suffice per input.
  for (const std::string& o : std::span(overrides).first(std::min<size_t>(overrides.size(), 4))) {
    fuzz::expect_only_tsumugi_errors([&] {
      TrainConfig c;
      apply_override(c, o);
    });
  }
  if (!config) return 0;
  // Outside expect_only_tsumugi_errors: a valid recipe that its own printout cannot restore is a bug.
  const std::string effective = config_to_toml(*config);
  try {
    const std::string again = config_to_toml(parse_config(effective, "effective.toml"));
    if (again != effective) {
      std::fprintf(stderr, "config_to_toml is not stable:\n%s\n---\n%s\n", effective.c_str(), again.c_str());
      std::abort();
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "the effective recipe does not parse: %s\n%s\n", e.what(), effective.c_str());
    std::abort();
  }
  return 0;
}
