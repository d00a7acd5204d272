// Placeholder until the corpus pipeline lands: registers nothing.
#include "commands.h"

namespace tsumugi::cli {
void add_data_commands(CLI::App&, CLI::App&) {}
}  // namespace tsumugi::cli
