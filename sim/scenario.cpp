// What a run is given and what it reports: the replay command and the JSON report.
#include <sstream>

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>
#include <string>
#include <vector>

#include "sim/simulation.hpp"

namespace sluice::sim {

using runtime::pool_policy;

std::string to_string(strategy order) {
    switch (order) {
    case strategy::fifo:
        return "fifo";
    case strategy::random:
        return "random";
    case strategy::pct:
        return "pct";
    }
    return "unknown";
}

std::string reproduce_command(const scenario& s) {
    std::ostringstream out;
    out << "sluice-sim --sources " << s.sources << " --buffers " << s.buffers << " --buffer-size "
        << s.buffer_size << " --reserve " << s.reserve << " --cap " << s.cap
        << " --processing-reserve " << s.processing_reserve << " --io-lanes " << s.io_lanes
        << " --compute-workers " << s.compute_workers << " --seed " << s.seed
        << " --virtual-seconds " << s.virtual_seconds << " --strategy " << to_string(s.order)
        << " --faults " << (s.faults ? "on" : "off") << " --policy "
        << (s.policy == pool_policy::legacy ? "legacy" : "sluice")
        << " --legacy-buffers-per-source " << s.legacy_buffers_per_source << " --records "
        << s.records_per_source << " --stream-fraction " << s.stream_fraction
        << " --paced-fraction " << s.paced_fraction << " --park " << (s.park_idle ? "on" : "off");
    if (s.drain_channels != scenario{}.drain_channels) {
        out << " --drain-channels " << s.drain_channels;
    }
    if (s.enqueue_fault >= 0.0) {
        out << " --enqueue-fault " << s.enqueue_fault;
    }
    if (s.interleave >= 0.0) {
        out << " --interleave " << s.interleave;
    }
    if (s.records_per_second > 0.0) {
        out << " --records-per-second " << s.records_per_second;
    }
    if (s.http_fraction > 0.0) {
        out << " --http-fraction " << s.http_fraction << " --http-buffer-wait-us "
            << s.http_buffer_wait_us;
    }
    if (s.late_registrations > 0 || s.admission_wait_seconds != scenario{}.admission_wait_seconds) {
        out << " --late-registrations " << s.late_registrations << " --admission-wait "
            << s.admission_wait_seconds;
    }
    return out.str();
}

std::string report::to_json() const {
    boost::json::array violation_list(violations.begin(), violations.end());
    boost::json::array waiting_list(waiting.begin(), waiting.end());
    std::ostringstream hash;
    hash << std::hex << trace_hash;
    const boost::json::object o{
        {"seed", seed},
        {"sources", sources},
        {"policy", policy},
        {"strategy", strategy_name},
        {"faults", faults},
        {"deadlock", deadlock},
        {"violations", std::move(violation_list)},
        {"waiting", std::move(waiting_list)},
        {"bytes_produced", bytes_produced},
        {"bytes_delivered", bytes_delivered},
        {"records_delivered", records_delivered},
        {"buffers_total", buffers_total},
        {"buffers_free_at_end", buffers_free_at_end},
        {"end_of_streams", end_of_streams},
        {"errors", errors},
        {"restarts", restarts},
        {"backpressure_waits", backpressure_waits},
        {"parks", parks},
        {"registrations_refused", registrations_refused},
        {"unregistered", unregistered},
        {"registrations_waited", registrations_waited},
        {"registrations_starved", registrations_starved},
        {"factory_failures", factory_failures},
        {"bytes_discarded", bytes_discarded},
        {"bytes_dropped", bytes_dropped},
        {"records_truncated", records_truncated},
        {"sink_failures", sink_failures},
        {"queue_failures", queue_failures},
        {"peer_connections", peer_connections},
        {"peer_resets", peer_resets},
        {"interleavings", interleavings},
        {"http_requests", http_requests},
        {"http_204", http_204},
        {"http_429", http_429},
        {"http_404", http_404},
        {"http_resets", http_resets},
        {"crashed", crashed},
        {"crash_seconds", crash_seconds},
        {"files_resumed", files_resumed},
        {"records_replayed", records_replayed},
        {"replay_max", replay_max},
        {"crashed_bytes_delivered", crashed_bytes_delivered},
        {"source_bytes_min", source_bytes_min},
        {"source_bytes_max", source_bytes_max},
        {"virtual_seconds", virtual_seconds},
        {"events", events},
        {"wall_seconds", wall_seconds},
        {"trace_hash", hash.str()},
    };
    return boost::json::serialize(o);
}

} // namespace sluice::sim
