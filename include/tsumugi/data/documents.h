#pragma once
/// Reading documents from corpus files: `.jsonl` (one JSON object per line, text in a chosen
/// field), `.txt` (documents separated by a blank line), and their `.gz` and `.zst` forms.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace tsumugi {

/// What to do with a record that is not valid UTF-8 (or, in `.jsonl`, not a JSON object with a
/// string text field): skip it and report it, or stop with an IOError.
enum class OnInvalid { skip, stop };

/// Options for reading documents.
struct DocumentReaderOptions {
  std::string text_field = "text";     ///< JSON field that holds the text in `.jsonl` files
  OnInvalid on_invalid = OnInvalid::stop;  ///< what to do with a bad record
};

/// One problem in an input record: "corpus.jsonl:17: invalid UTF-8 at byte 42 of the line".
struct InputProblem {
  std::string file;   ///< the input file
  uint64_t line = 0;  ///< 1-based line number
  std::string what;   ///< the check that failed, e.g. "invalid UTF-8 at byte 42 of the line"
  /// "file:line: what"
  std::string message() const { return file + ":" + std::to_string(line) + ": " + what; }
};

/// A document and where it came from.
struct Document {
  std::string text;    ///< UTF-8
  size_t file = 0;     ///< index into the reader's files
  uint64_t line = 0;   ///< 1-based line where the document starts
};

/// Reads documents from files in order. Empty documents are left out.
class DocumentReader {
 public:
  /// Opens nothing yet; files are read one after the other. Throws IOError for a missing file.
  DocumentReader(std::vector<std::string> files, DocumentReaderOptions options = {});
  ~DocumentReader();
  DocumentReader(DocumentReader&&) noexcept;
  DocumentReader& operator=(DocumentReader&&) noexcept;

  /// The next document; false at the end. Under OnInvalid::stop a bad record throws IOError
  /// naming file, line and check; under skip it is recorded in problems() and passed over.
  bool next(Document& document);
  /// Records skipped so far (OnInvalid::skip).
  const std::vector<InputProblem>& problems() const;
  /// The files being read, in order.
  const std::vector<std::string>& files() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// Files named by `paths`, in order: files as given; folders expanded (recursively, sorted) to
/// their *.jsonl, *.txt and *.gz / *.zst forms. Throws IOError for a path that does not exist.
std::vector<std::string> expand_input_paths(const std::vector<std::string>& paths);

}  // namespace tsumugi
