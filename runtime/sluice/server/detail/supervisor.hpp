#pragma once
/// Internal: reconnect supervision. After a transport error a source that reconnects opens
/// again after a capped exponential backoff with jitter, until it has failed
/// `reconnect_attempts_max` times in a row without reading anything; then it fails.

#include <algorithm>
#include <cstdint>
#include <string>

#include "sluice/env/environment.hpp"
#include "sluice/server/source_server.hpp"

namespace sluice::runtime {

class supervisor {
public:
    struct verdict {
        bool reconnect = false;
        duration delay{};    ///< before the next open, when reconnecting
        std::string failure; ///< the Error's text, when not
    };

    supervisor(environment& env, const server_options& options) : env_(env), options_(options) {}

    /// The decision after a transport error described by `reason`. `failures` is the source's
    /// count of consecutive failed opens, updated here (reset first when data was read since
    /// the last open).
    verdict after_error(std::uint32_t& failures, bool read_since_open, bool reconnects,
                        const std::string& reason) const {
        if (!reconnects) {
            return {false, {}, reason};
        }
        if (read_since_open) {
            failures = 0;
        }
        if (++failures > options_.reconnect_attempts_max) {
            return {false,
                    {},
                    reason + "; gave up after " + std::to_string(failures - 1) + " reconnects"};
        }
        return {true, backoff_delay(failures - 1), {}};
    }

    /// Uniform in [base/2, base], base = initial × 2^attempt capped at backoff_max.
    duration backoff_delay(std::uint32_t attempt) const {
        duration base = options_.backoff_initial;
        for (std::uint32_t i = 0; i < attempt && base < options_.backoff_max; ++i) {
            base *= 2;
        }
        base = std::min(base, options_.backoff_max);
        const auto half = static_cast<std::uint64_t>(base.count() / 2);
        return duration(static_cast<duration::rep>(half + env_.random_u64() % (half + 1)));
    }

private:
    environment& env_;
    const server_options& options_;
};

} // namespace sluice::runtime
