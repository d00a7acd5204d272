// A job in which rank 1 never joins the second all-reduce: the watchdog must end the whole job
// with a message naming the rank, the operation and its sequence number.
#include <tsumugi/tsumugi.h>
#include <tsumugi/dist/process_group.h>

#include <chrono>
#include <thread>

int main() {
  using namespace tsumugi;
  auto world = mpi_world();
  world->set_timeout(std::chrono::seconds(2));
  Tensor t = ones({4});
  world->all_reduce(t);  // #1: everyone
  if (world->rank() == 1) std::this_thread::sleep_for(std::chrono::seconds(120));  // stalls
  world->all_reduce(t);  // #2: rank 1 never arrives
  shutdown_distributed();
  return 0;
}
