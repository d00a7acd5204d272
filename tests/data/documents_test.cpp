// Reading documents: formats, compression, blank-line separation, invalid UTF-8 with file and line.
#include <tsumugi/core/error.h>
#include <tsumugi/data/documents.h>

#include <gtest/gtest.h>

#include "data/data_test_util.h"

namespace tsumugi {
namespace {

using testing::ScratchDir;

std::vector<std::string> read_all(const std::vector<std::string>& files, DocumentReaderOptions options = {}) {
  DocumentReader reader(files, options);
  std::vector<std::string> texts;
  Document document;
  while (reader.next(document)) texts.push_back(document.text);
  return texts;
}

TEST(DocumentReader, ReadsJsonlAndTxtPlainGzipAndZstd) {
  ScratchDir dir("tsumugi-documents");
  const std::vector<std::string> documents = {"東京\n大阪", "ascii only", "emoji 😀", "最後"};
  for (const std::string name : {"a.jsonl", "a.jsonl.gz", "a.jsonl.zst", "b.txt", "b.txt.gz", "b.txt.zst"}) {
    const bool json = name.find("jsonl") != std::string::npos;
    testing::write_file(dir / name, json ? testing::jsonl_of(documents) : testing::txt_of(documents));
    EXPECT_EQ(read_all({dir / name}), documents) << name;
  }
}

TEST(DocumentReader, ReadsLargeCompressedFilesAcrossBufferBoundaries) {
  ScratchDir dir("tsumugi-documents-large");
  std::vector<std::string> documents;
  for (int i = 0; i < 3000; ++i) documents.push_back(std::string(1000 + i % 7, 'a' + i % 26) + "の文書 " + std::to_string(i));
  for (const std::string name : {"big.jsonl.gz", "big.txt.zst"}) {
    const bool json = name.find("jsonl") != std::string::npos;
    testing::write_file(dir / name, json ? testing::jsonl_of(documents) : testing::txt_of(documents));
    EXPECT_EQ(read_all({dir / name}), documents) << name;
  }
}

TEST(DocumentReader, SeparatesTextDocumentsByBlankLinesAndKeepsInnerNewlines) {
  ScratchDir dir("tsumugi-documents-txt");
  testing::write_file(dir / "c.txt", "\n\none\ntwo\n\n\n\nthree\r\n\r\nfour");
  EXPECT_EQ(read_all({dir / "c.txt"}), (std::vector<std::string>{"one\ntwo", "three\r", "four"}));
}

TEST(DocumentReader, UsesTheConfiguredTextField) {
  ScratchDir dir("tsumugi-documents-field");
  testing::write_file(dir / "d.jsonl", "{\"text\": \"a\", \"body\": \"本文\"}\n");
  EXPECT_EQ(read_all({dir / "d.jsonl"}, {.text_field = "body"}), (std::vector<std::string>{"本文"}));
}

TEST(DocumentReader, StopsOnInvalidUtf8NamingFileAndLine) {
  ScratchDir dir("tsumugi-documents-invalid");
  testing::write_file(dir / "bad.txt", "good\n\nline one\nline \xE3\x81 two\n\nafter");
  try {
    read_all({dir / "bad.txt"});
    FAIL() << "no error";
  } catch (const IOError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find(dir / "bad.txt" + ":4: invalid UTF-8 at byte 6"), std::string::npos) << message;
  }
}

TEST(DocumentReader, SkipsInvalidRecordsAndReportsThemWhenAsked) {
  ScratchDir dir("tsumugi-documents-skip");
  testing::write_file(dir / "bad.jsonl", "{\"text\": \"ok\"}\n{\"text\": \"\xC0\x80 overlong\"}\n{\"txt\": \"x\"}\n"
                                         "{\"text\": \"\xED\xA0\x80 surrogate\"}\n{\"text\": \"end\"}\n");
  DocumentReader reader({dir / "bad.jsonl"}, {.on_invalid = OnInvalid::skip});
  std::vector<std::string> texts;
  Document document;
  while (reader.next(document)) texts.push_back(document.text);
  EXPECT_EQ(texts, (std::vector<std::string>{"ok", "end"}));
  ASSERT_EQ(reader.problems().size(), 3u);
  EXPECT_EQ(reader.problems()[0].message(), dir / "bad.jsonl" + ":2: invalid UTF-8 at byte 11 of the line");
  EXPECT_EQ(reader.problems()[1].message(), dir / "bad.jsonl" + ":3: no string field \"text\"");
  EXPECT_EQ(reader.problems()[2].line, 4u);
}

TEST(DocumentReader, RejectsUnknownFormatsAndMissingFiles) {
  ScratchDir dir("tsumugi-documents-formats");
  testing::write_file(dir / "x.csv", "a,b\n");
  EXPECT_THROW(read_all({dir / "x.csv"}), ValueError);
  EXPECT_THROW(read_all({dir / "missing.txt"}), IOError);
  EXPECT_THROW(expand_input_paths({dir / "missing-folder"}), IOError);
}

TEST(DocumentReader, ReportsTruncatedCompressedFiles) {
  ScratchDir dir("tsumugi-documents-truncated");
  testing::write_file(dir / "t.txt.zst", testing::txt_of({std::string(5000, 'x'), "end"}));
  const std::string bytes = testing::read_bytes(dir / "t.txt.zst");
  testing::write_file(dir / "cut.txt", "");
  std::ofstream(dir / "cut.txt.zst", std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  try {
    read_all({dir / "cut.txt.zst"});
    FAIL() << "no error";
  } catch (const IOError& e) {
    EXPECT_NE(std::string(e.what()).find("truncated zstd"), std::string::npos) << e.what();
  }
}

TEST(DocumentReader, ExpandsFoldersToCorpusFilesInSortedOrder) {
  ScratchDir dir("tsumugi-documents-folder");
  std::filesystem::create_directories(dir / "sub");
  testing::write_file(dir / "b.jsonl", "");
  testing::write_file(dir / "a.txt.gz", "");
  testing::write_file(dir / "sub/c.txt", "");
  testing::write_file(dir / "README.md", "");
  EXPECT_EQ(expand_input_paths({dir.str()}), (std::vector<std::string>{dir / "a.txt.gz", dir / "b.jsonl", dir / "sub/c.txt"}));
}

}  // namespace
}  // namespace tsumugi
