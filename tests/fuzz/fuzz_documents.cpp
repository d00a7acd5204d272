// Fuzzes corpus input: .jsonl and .txt documents (any bytes, invalid UTF-8 included), plain or
// in .gz / .zst files, read by DocumentReader, then (for .jsonl) duplicate-paragraph removal and
// corpus statistics. The first byte of the input chooses the file kind:
//   bit 0: .jsonl or .txt;  bits 1-2: plain, .gz, .zst, or the rest written as-is under .gz/.zst
//   (raw compressed bytes);  bit 3: on_invalid = skip or stop.
#include <tsumugi/data/corpus.h>
#include <tsumugi/data/documents.h>

#include <zlib.h>
#include <zstd.h>

#include <vector>

#include "fuzz/fuzz_util.h"

namespace {

std::string gzip(std::string_view text) {
  z_stream z{};
  deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);  // gzip wrapper
  std::string out(deflateBound(&z, text.size()) + 32, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(text.data()));
  z.avail_in = static_cast<uInt>(text.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  deflate(&z, Z_FINISH);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

std::string zstd(std::string_view text) {
  std::string out(ZSTD_compressBound(text.size()), '\0');
  out.resize(ZSTD_compress(out.data(), out.size(), text.data(), text.size(), 3));
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace tsumugi;
  if (size == 0) return 0;
  const uint8_t mode = data[0];
  const std::string_view text = fuzz::as_text(data + 1, size - 1);
  const bool jsonl = (mode & 1) == 0;
  const int packing = (mode >> 1) & 3;  // 0 plain, 1 gzip, 2 zstd, 3 raw bytes as .gz or .zst
  const bool raw_zstd = packing == 3 && (mode & 0x10);
  std::string name = jsonl ? "corpus.jsonl" : "corpus.txt";
  std::string bytes(text);
  if (packing == 1 || (packing == 3 && !raw_zstd)) name += ".gz";
  if (packing == 2 || raw_zstd) name += ".zst";
  if (packing == 1) bytes = gzip(text);
  if (packing == 2) bytes = zstd(text);
  const std::string path = (fuzz::scratch_dir() / name).string();
  fuzz::write_file(path, bytes);

  DocumentReaderOptions options;
  options.on_invalid = (mode & 8) ? OnInvalid::skip : OnInvalid::stop;
  fuzz::expect_only_tsumugi_errors([&] {
    DocumentReader reader({path}, options);
    Document document;
    while (reader.next(document)) {
    }
  });
  if (jsonl) {
    const std::string deduplicated = (fuzz::scratch_dir() / "dedup.jsonl").string();
    fuzz::expect_only_tsumugi_errors([&] {
      remove_duplicate_paragraphs({path}, deduplicated);
      (void)summarize_corpus(deduplicated);
    });
  }
  return 0;
}
