// tsumugi corpus debian-ja: the quickstart corpus from Debian's Japanese documentation.
#include <tsumugi/data/corpus.h>

#include <fmt/format.h>
#include <unistd.h>

#include <filesystem>
#include <memory>

#include "data_commands.h"

namespace tsumugi::cli {
namespace {

namespace fs = std::filesystem;

// The extraction helper: installed beside the tool (../share/tsumugi/corpus) or in the source tree.
std::string default_helper() {
  std::error_code error;
  const fs::path exe = fs::read_symlink("/proc/self/exe", error);
  if (!error) {
    const fs::path installed = exe.parent_path().parent_path() / "share" / "tsumugi" / "corpus" / "debian_ja.py";
    if (fs::exists(installed)) return installed.string();
  }
  return TSUMUGI_SOURCE_DIR "/tools/corpus/debian_ja.py";
}

struct CorpusOptions {
  std::string out;
  std::vector<std::string> packages;
  std::string helper;
  int jobs = 0;
};

}  // namespace

void add_corpus_command(CLI::App& app) {
  CLI::App* corpus = app.add_subcommand("corpus", "Build corpora from local sources");
  corpus->require_subcommand(1);
  auto options = std::make_shared<CorpusOptions>();
  CLI::App* debian = corpus->add_subcommand(
      "debian-ja", "Download Debian's Japanese documentation packages (no install) and turn them into JSON lines");
  debian->add_option("--out", options->out, "Output folder (re-running reuses what it holds)")->required();
  debian->add_option("--packages", options->packages, "Packages (default: the thirteen of docs/data.md)")
      ->delimiter(',');
  debian->add_option("--helper", options->helper, "Path of tools/corpus/debian_ja.py");
  debian->add_option("--jobs", options->jobs, "Extraction processes (default: all cores)");
  debian->callback([options] {
    DebianJaOptions run;
    run.out_dir = options->out;
    if (!options->packages.empty()) run.packages = options->packages;
    run.helper = options->helper.empty() ? default_helper() : options->helper;
    run.jobs = options->jobs;
    run.log = [](const std::string& line) { fmt::print(stderr, "corpus: {}\n", line); };
    const DebianJaResult result = build_debian_ja_corpus(run);
    const CorpusSummary& s = result.summary;
    fmt::print("corpus: {}\n", result.corpus_path);
    fmt::print("  documents   {}\n", with_commas(s.documents));
    fmt::print("  characters  {}\n", with_commas(s.characters));
    fmt::print("  Japanese    {:.1f}% of non-space characters\n", 100 * s.japanese_share());
    fmt::print("  bytes       {} ({})\n", with_commas(s.bytes), human_bytes(static_cast<double>(s.bytes)));
    fmt::print("  paragraphs  {} kept of {} (exact duplicates removed)\n", with_commas(result.dedup.paragraphs_out),
               with_commas(result.dedup.paragraphs_in));
    fmt::print("  time        {:.1f} s\n", result.seconds);
  });
}

}  // namespace tsumugi::cli
