#pragma once
/// Threads of this process, as the kernel counts them (/proc/self/task). The worker samples it
/// for `threads_max`; tests use it to prove the thread count does not follow the source count.

#include <cstddef>

namespace sluice::runtime {

/// Entries in /proc/self/task now; 0 when it cannot be read.
std::size_t process_thread_count() noexcept;

} // namespace sluice::runtime
