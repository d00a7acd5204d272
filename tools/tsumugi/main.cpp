// tsumugi: one command-line tool with subcommands (CLI11).
//
// An error ends the tool with one line on stderr and a non-zero exit. Under mpirun the line
// names the rank, and the whole job is ended (MPI_Abort) so that no other rank waits forever.
#include <tsumugi/core/device.h>
#include <tsumugi/core/error.h>
#include <tsumugi/dist/process_group.h>

#include <csignal>
#include <cstdio>
#include <exception>

#include "commands.h"

namespace {

[[noreturn]] void fail(const char* kind, const char* what, int code) {
  if (tsumugi::launched_with_mpi()) {
    std::fprintf(stderr, "tsumugi: rank %d: %s: %s\n", tsumugi::job_rank(), kind, what);
    std::fflush(stderr);
    tsumugi::abort_job(code);
  }
  std::fprintf(stderr, "tsumugi: %s: %s\n", kind, what);
  std::exit(code);
}

}  // namespace

int main(int argc, char** argv) {
  // A write past a file-size limit (ulimit -f) then fails with EFBIG and is reported as an
  // error naming the file, instead of killing the process.
  std::signal(SIGXFSZ, SIG_IGN);
  CLI::App app{"tsumugi: pretrain Japanese language models on local data"};
  app.require_subcommand(0, 1);
  // `tsumugi --version`: the version, and whether this build and machine can use a GPU (exit 0
  // either way; scripts read the "cuda:" line).
  app.add_flag_callback("--version", [] {
    std::printf("tsumugi %s\ncuda: %s, %d device(s)\n", TSUMUGI_VERSION,
                tsumugi::cuda_built() ? "built" : "not built", tsumugi::cuda_device_count());
    std::exit(0);
  }, "Print the version and the CUDA devices, then exit");
  CLI::App* bench = app.add_subcommand("bench", "Benchmarks that print their numbers");
  bench->require_subcommand(1);
  tsumugi::cli::add_bench_train_command(*bench);
  tsumugi::cli::add_bench_comm_command(*bench);
  tsumugi::cli::add_bench_gemm_command(*bench);
  tsumugi::cli::add_bench_kernels_command(*bench);
  tsumugi::cli::add_data_commands(app, *bench);
  tsumugi::cli::add_train_commands(app);
  try {
    app.parse(argc, argv);
    if (app.get_subcommands().empty()) {
      std::fputs(app.help().c_str(), stderr);
      return 1;
    }
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const tsumugi::Error& e) {
    fail("error", e.what(), 1);
  } catch (const std::exception& e) {
    fail("internal error", e.what(), 2);
  }
  tsumugi::shutdown_distributed();
  return 0;
}
