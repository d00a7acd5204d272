// Fuzzes the safetensors reader (header length, JSON header, dtypes, shapes, byte ranges) through
// parse_safetensors, the function load_safetensors hands a file's bytes to.
#include <tsumugi/core/ops.h>
#include <tsumugi/core/safetensors.h>

#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace tsumugi;
  fuzz::expect_only_tsumugi_errors([&] {
    Metadata metadata;
    const StateDict tensors = parse_safetensors(std::string(fuzz::as_text(data, size)), "fuzz.safetensors", &metadata);
    // Every tensor read must be usable: touch its shape and bytes.
    for (const auto& [name, tensor] : tensors) {
      if (tensor.numel() > 0) (void)sum(tensor.to(DType::f32)).item<float>();
    }
  });
  return 0;
}
