#include "runtime/process_threads.hpp"

#include <filesystem>

namespace sluice::runtime {

std::size_t process_thread_count() noexcept {
    std::error_code error;
    std::size_t n = 0;
    for (auto it = std::filesystem::directory_iterator("/proc/self/task", error);
         !error && it != std::filesystem::directory_iterator(); it.increment(error)) {
        ++n;
    }
    return n;
}

} // namespace sluice::runtime
