// Fuzzes tokenizer loading: the input is a SentencePiece model file handed to Tokenizer::load by
// path (as `tsumugi tokenizer encode --model` and training do). A model that loads must encode,
// decode and count bytes without fault.
#include <tsumugi/tokenizer/tokenizer.h>

#include <algorithm>

#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace tsumugi;
  const std::string path = (fuzz::scratch_dir() / "fuzz.model").string();
  fuzz::write_file(path, fuzz::as_text(data, size));
  fuzz::expect_only_tsumugi_errors([&] {
    const Tokenizer tokenizer = Tokenizer::load(path);
    const std::vector<int32_t> ids = tokenizer.encode("東京の天気は晴れ。 plain ASCII 123 😀");
    (void)tokenizer.decode(ids);
    (void)tokenizer.byte_count(ids);
    (void)tokenizer.encode_pieces("日本語 text");
    for (int32_t id = 0; id < std::min(tokenizer.vocab_size(), 512); ++id) (void)tokenizer.piece(id);
    (void)tokenizer.decode(std::vector<int32_t>{tokenizer.eos_id()});
  });
  return 0;
}
