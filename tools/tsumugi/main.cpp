// tsumugi: one command-line tool with subcommands (CLI11).
#include <tsumugi/core/error.h>

#include <csignal>
#include <cstdio>
#include <exception>

#include "commands.h"

int main(int argc, char** argv) {
  // A write past a file-size limit (ulimit -f) then fails with EFBIG and is reported as an
  // error naming the file, instead of killing the process.
  std::signal(SIGXFSZ, SIG_IGN);
  CLI::App app{"tsumugi: pretrain Japanese language models on local data"};
  app.require_subcommand(1);
  CLI::App* bench = app.add_subcommand("bench", "Benchmarks that print their numbers");
  bench->require_subcommand(1);
  tsumugi::cli::add_bench_train_command(*bench);
  tsumugi::cli::add_data_commands(app, *bench);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const tsumugi::Error& e) {
    std::fprintf(stderr, "tsumugi: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tsumugi: internal error: %s\n", e.what());
    return 2;
  }
  return 0;
}
