// The Debian Japanese documentation corpus: download, extract (Python helper), deduplicate.
#include <tsumugi/data/corpus.h>

#include <grp.h>
#include <pwd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>
#include <unordered_set>

#include <nlohmann/json.hpp>

#include "core/check.h"
#include "records.h"
#include "text_util.h"

namespace tsumugi {
namespace {

namespace fs = std::filesystem;

bool is_japanese(char32_t c) {
  return (c >= 0x3000 && c <= 0x30FF) || (c >= 0x31F0 && c <= 0x31FF) || (c >= 0x3400 && c <= 0x4DBF) ||
         (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0xF900 && c <= 0xFAFF) || (c >= 0xFF00 && c <= 0xFFEF);
}

bool is_space(char32_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == 0x3000; }

void count_text(std::string_view text, CorpusSummary& summary) {
  summary.bytes += text.size();
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  for (size_t i = 0; i < text.size();) {
    const unsigned char lead = s[i];
    const int length = lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
    char32_t c = length == 1 ? lead : length == 2 ? lead & 0x1F : length == 3 ? lead & 0x0F : lead & 0x07;
    for (int k = 1; k < length && i + k < text.size(); ++k) c = (c << 6) | (s[i + k] & 0x3F);
    i += length;
    ++summary.characters;
    if (is_space(c)) continue;
    ++summary.nonspace_characters;
    if (is_japanese(c)) ++summary.japanese_characters;
  }
}

// Runs argv[0] (found on PATH) in `cwd`, its output going to ours; returns the exit status.
int run_process(const std::vector<std::string>& argv, const std::string& cwd) {
  std::vector<char*> args;
  for (const auto& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  const pid_t child = fork();
  TSU_CHECK(child >= 0, IOError, "[corpus] cannot start {}", argv[0]);
  if (child == 0) {
    if (!cwd.empty() && chdir(cwd.c_str()) != 0) _exit(126);
    execvp(args[0], args.data());
    _exit(127);
  }
  int status = 0;
  while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

bool has_deb(const fs::path& debs, const std::string& package) {
  for (const auto& entry : fs::directory_iterator(debs)) {
    const std::string name = entry.path().filename().string();
    if (name.starts_with(package + "_") && name.ends_with(".deb")) return true;
  }
  return false;
}

// apt-get download, run as root, hands the download to the unprivileged _apt user: the folder
// must be writable by it, or apt warns and falls back to downloading unsandboxed.
void make_writable_for_apt(const fs::path& dir) {
  if (geteuid() != 0) return;
  if (const passwd* apt = getpwnam("_apt")) {
    if (chown(dir.c_str(), apt->pw_uid, static_cast<gid_t>(-1)) != 0) {
      TSU_FAIL(IOError, "[corpus] {}: cannot hand the download folder to user _apt", dir.string());
    }
  }
}

}  // namespace

const std::vector<std::string>& debian_ja_packages() {
  static const std::vector<std::string> packages = {
      "manpages-ja",          "manpages-ja-dev", "libreoffice-help-ja", "scilab-doc-ja",     "gimp-help-ja",
      "lilypond-doc-html-ja", "groonga-doc",     "apache2-doc",         "debian-reference-ja", "developers-reference-ja",
      "maint-guide-ja",       "debian-faq-ja",   "aptitude-doc-ja"};
  return packages;
}

CorpusSummary summarize_corpus(const std::string& jsonl_path) {
  CorpusSummary summary;
  DocumentReader reader({jsonl_path});
  Document document;
  while (reader.next(document)) {
    ++summary.documents;
    count_text(document.text, summary);
  }
  return summary;
}

DedupStats remove_duplicate_paragraphs(const std::vector<std::string>& input_paths, const std::string& output_path) {
  DedupStats stats;
  std::unordered_set<std::string> seen;
  const std::string temporary = output_path + ".tmp";
  std::ofstream out(temporary, std::ios::binary);
  TSU_CHECK(out.good(), IOError, "[corpus] {}: cannot create", temporary);
  for (const auto& path : input_paths) {
    data_internal::LineReader lines(path);
    std::string_view line;
    while (lines.next(line)) {
      if (line.empty()) continue;
      nlohmann::json record;
      try {
        record = nlohmann::json::parse(line);
      } catch (const nlohmann::json::exception& e) {
        TSU_FAIL(IOError, "[corpus] {}:{}: invalid JSON: {}", path, lines.line_number(), e.what());
      }
      TSU_CHECK(record.is_object() && record.contains("text") && record["text"].is_string(), IOError,
                "[corpus] {}:{}: no string field \"text\"", path, lines.line_number());
      TSU_CHECK(!record.contains("source") || record["source"].is_string(), IOError,
                "[corpus] {}:{}: field \"source\" is not a string", path, lines.line_number());
      ++stats.documents_in;
      const std::string text = record["text"].get<std::string>();
      std::string kept;
      std::string_view rest = text;
      while (!rest.empty()) {
        const size_t end = std::min(rest.find('\n'), rest.size());
        const std::string_view paragraph = rest.substr(0, end);
        rest.remove_prefix(std::min(end + 1, rest.size()));
        if (paragraph.empty()) continue;
        ++stats.paragraphs_in;
        if (!seen.emplace(paragraph).second) continue;
        ++stats.paragraphs_out;
        if (!kept.empty()) kept += '\n';
        kept += paragraph;
      }
      if (kept.empty()) continue;
      ++stats.documents_out;
      nlohmann::ordered_json document;
      document["text"] = kept;
      document["source"] = record.value("source", path);
      out << document.dump() << '\n';
    }
  }
  out.close();
  TSU_CHECK(out.good(), IOError, "[corpus] {}: cannot write", temporary);
  fs::rename(temporary, output_path);
  return stats;
}

DebianJaResult build_debian_ja_corpus(const DebianJaOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  const auto log = [&](const std::string& line) {
    if (options.log) options.log(line);
  };
  TSU_CHECK(!options.out_dir.empty(), ValueError, "[corpus] no output folder");
  TSU_CHECK(fs::is_regular_file(options.helper), IOError, "[corpus] {}: extraction helper not found",
            options.helper);
  const fs::path out(options.out_dir);
  const fs::path debs = out / "debs";
  const fs::path extracted = out / "extracted";
  fs::create_directories(debs);
  fs::create_directories(extracted);

  std::vector<std::string> missing;
  for (const auto& package : options.packages) {
    if (!has_deb(debs, package)) missing.push_back(package);
  }
  if (missing.empty()) {
    log(fmt::format("download: all {} packages already in {}", options.packages.size(), debs.string()));
  } else {
    log(fmt::format("download: apt-get download {} packages into {}", missing.size(), debs.string()));
    make_writable_for_apt(debs);
    std::vector<std::string> argv = {"apt-get", "download", "-q"};
    argv.insert(argv.end(), missing.begin(), missing.end());
    const int status = run_process(argv, debs.string());
    TSU_CHECK(status == 0, IOError,
              "[corpus] apt-get download failed with status {} (is the package list current? run `apt-get update`)",
              status);
  }

  const int jobs = options.jobs > 0 ? options.jobs : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  std::vector<std::string> argv = {"python3", options.helper, "--debs", debs.string(), "--out", extracted.string(),
                                   "--jobs", std::to_string(jobs)};
  argv.insert(argv.end(), options.packages.begin(), options.packages.end());
  log("extract: roff and HTML to clean paragraphs");
  const int status = run_process(argv, "");
  TSU_CHECK(status == 0, IOError, "[corpus] {} failed with status {}", options.helper, status);

  std::vector<std::string> parts;
  for (const auto& package : options.packages) parts.push_back((extracted / (package + ".jsonl")).string());
  DebianJaResult result;
  result.corpus_path = (out / "debian-ja.jsonl").string();
  log("dedup: removing duplicate paragraphs");
  result.dedup = remove_duplicate_paragraphs(parts, result.corpus_path);
  result.summary = summarize_corpus(result.corpus_path);
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  nlohmann::ordered_json summary;
  summary["corpus"] = result.corpus_path;
  summary["packages"] = options.packages;
  summary["documents"] = result.summary.documents;
  summary["characters"] = result.summary.characters;
  summary["japanese_share"] = result.summary.japanese_share();
  summary["bytes"] = result.summary.bytes;
  summary["paragraphs_in"] = result.dedup.paragraphs_in;
  summary["paragraphs_kept"] = result.dedup.paragraphs_out;
  std::ofstream file(out / "summary.json");
  file << summary.dump(2) << "\n";
  TSU_CHECK(file.good(), IOError, "[corpus] {}: cannot write", (out / "summary.json").string());
  return result;
}

}  // namespace tsumugi
