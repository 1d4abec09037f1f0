#pragma once
/// Threads of this process, as the kernel counts them (/proc/self/task). The worker samples it
/// for `threads_max`; tests use it to prove the thread count does not follow the source count.
/// Also the open-file limit, which programs that open many sockets raise (DESIGN: the hard limit
/// is per process).

#include <cstddef>

namespace sluice::runtime {

/// Entries in /proc/self/task now; 0 when it cannot be read.
std::size_t process_thread_count() noexcept;

/// Raises this process's open-file soft limit to its hard limit; returns the soft limit now.
std::size_t raise_open_file_limit() noexcept;

/// CPU seconds (user + system) this process has used so far (getrusage).
double process_cpu_seconds() noexcept;

} // namespace sluice::runtime
