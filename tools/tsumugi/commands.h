#pragma once
// Each subcommand of the tsumugi tool registers itself on the CLI11 app here.
// A command's callback throws tsumugi::Error on failure; main prints it and exits non-zero.
#include <CLI/CLI.hpp>

namespace tsumugi::cli {

void add_bench_train_command(CLI::App& bench);  // tsumugi bench train
void add_bench_comm_command(CLI::App& bench);   // tsumugi bench comm
void add_bench_gemm_command(CLI::App& bench);   // tsumugi bench gemm
void add_bench_kernels_command(CLI::App& bench);  // tsumugi bench kernels
void add_data_commands(CLI::App& app, CLI::App& bench);  // corpus, tokenizer, prep, inspect, bench data
void add_train_commands(CLI::App& app);                  // train, eval, generate, export

}  // namespace tsumugi::cli
