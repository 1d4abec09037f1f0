#include "tests/support/recording_sink.hpp"

#include <filesystem>

namespace sluice::test {

std::size_t thread_count() {
    std::error_code error;
    std::size_t n = 0;
    for (auto it = std::filesystem::directory_iterator("/proc/self/task", error);
         !error && it != std::filesystem::directory_iterator(); it.increment(error)) {
        ++n;
    }
    return n;
}

} // namespace sluice::test
