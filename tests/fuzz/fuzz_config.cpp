// libFuzzer target: the TOML configuration loader. Any input must give either a configuration
// that satisfies every documented constraint or errors that each say what is wrong — never a
// crash, an exception, a sanitizer report or a silently invalid configuration.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "apps/sluiced/worker_config.hpp"

namespace {

[[noreturn]] void fail(const char* what) {
    std::fprintf(stderr, "fuzz_config: %s\n", what);
    std::abort();
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace sluice::runtime;
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    const config_result result = parse_worker_config(text, "fuzz.toml");
    if (!result.ok()) {
        for (const auto& error : result.errors) {
            if (error.problem.empty() || error.to_string().empty()) {
                fail("an error without a problem statement");
            }
        }
        return 0;
    }
    const worker_config& c = result.config;
    try {
        c.pool.validate();
    } catch (const std::exception& e) {
        std::fprintf(stderr, "fuzz_config: accepted a pool the pool refuses: %s\n", e.what());
        std::abort();
    }
    std::uint64_t reserved = 0;
    for (const auto& s : c.sources) {
        if (s.limits.reserve == 0 || s.limits.cap < s.limits.reserve || s.count == 0) {
            fail("accepted a source with invalid limits or count");
        }
        reserved += std::uint64_t{s.count} * s.limits.reserve;
    }
    if (reserved + c.pool.processing_reserve > c.pool.buffer_count) {
        fail("accepted reserves that the pool cannot admit");
    }
    if (c.threads.io_threads == 0 || c.threads.compute_threads == 0 ||
        c.threads.blocking_threads == 0) {
        fail("accepted a zero thread count");
    }
    if (c.pool.processing_reserve < c.threads.compute_threads) {
        fail("accepted a processing reserve below the compute threads");
    }
    return 0;
}
