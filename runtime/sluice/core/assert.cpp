#include "sluice/core/assert.hpp"

#include <cstdio>
#include <cstdlib>

namespace sluice::runtime::detail {

void assert_fail(const char* condition, const char* file, int line, const char* function) noexcept {
    std::fprintf(stderr, "sluice: assertion failed: %s\n  at %s:%d in %s\n", condition, file, line,
                 function);
    std::fflush(stderr);
    std::abort();
}

} // namespace sluice::runtime::detail
