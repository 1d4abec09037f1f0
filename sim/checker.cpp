#include "sim/checker.hpp"

#include <algorithm>
#include <string>

namespace sluice::sim {

void check_registrations_undone(const runtime::buffer_pool& pool, report& result) {
    const auto after = pool.stats();
    if (after.sources_registered != 0 || after.sources_retiring != 0 ||
        after.reserved_sources != 0) {
        result.violations.push_back("registrations left behind after shutdown: " +
                                    std::to_string(after.sources_registered) + " registered, " +
                                    std::to_string(after.sources_retiring) + " retiring, " +
                                    std::to_string(after.reserved_sources) + " buffers reserved");
    }
}

void check_finished_run(const scenario& s, const operator_plan& plan, const verifying_sink& out,
                        std::uint32_t buffers, report& result) {
    // Every byte read reached the sink, except those of origins the sink itself failed
    // (discarded after its Error) and of buffers that could not be queued (the source ended
    // with an Error saying so): each counted.
    if (result.bytes_produced != out.bytes + result.bytes_discarded + result.bytes_dropped) {
        result.violations.push_back("bytes read " + std::to_string(result.bytes_produced) +
                                    " != bytes delivered " + std::to_string(out.bytes) +
                                    " + discarded " + std::to_string(result.bytes_discarded) +
                                    " + dropped " + std::to_string(result.bytes_dropped));
    }
    if (result.buffers_free_at_end != buffers) {
        result.violations.push_back(
            "leak: " + std::to_string(buffers - result.buffers_free_at_end) +
            " buffers not back in the pool");
    }
    const auto& sources = plan.sources();
    std::uint64_t least = ~std::uint64_t{0};
    std::uint64_t most = 0;
    for (std::size_t i = 0; i < plan.initial_count(); ++i) {
        const auto* log = out.find(sources[i].handle);
        const std::uint64_t delivered = log != nullptr ? log->bytes : 0;
        least = std::min(least, delivered);
        most = std::max(most, delivered);
    }
    result.source_bytes_min = plan.initial_count() > 0 ? least : 0;
    result.sources_run = sources.size();
    result.source_bytes_max = most;
    for (const auto& p : sources) {
        const auto* log = out.find(p.handle);
        if (!plan.endless() && p.complete_at_end() && log != nullptr && log->ended &&
            log->checker.next_record() != s.records_per_source) {
            result.violations.push_back("origin " + std::to_string(p.handle) + ": ended after " +
                                        std::to_string(log->checker.next_record()) + " of " +
                                        std::to_string(s.records_per_source) + " records");
        }
    }
}

} // namespace sluice::sim
