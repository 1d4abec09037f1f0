#pragma once
/// What the source server counts: `server_stats`, the snapshot an engine or the metrics
/// collector reads, and `server_counters`, the live counters behind it (relaxed atomics,
/// written on the lanes, read by `source_server::stats()`).

#include <array>
#include <atomic>
#include <cstdint>

#include "sluice/core/histogram.hpp"
#include "sluice/pool/buffer.hpp"
#include "sluice/source/http_source.hpp"
#include "sluice/source/source.hpp"
#include "sluice/tls/tls.hpp"

namespace sluice::runtime {

enum class source_state : std::uint8_t { registered, running, stopping, stopped, failed };
inline constexpr std::size_t source_state_count = 5;

struct server_stats {
    std::array<std::uint32_t, source_state_count> sources_by_state{};
    /// [kind][state]
    std::array<std::array<std::uint32_t, source_state_count>, source_kind_max>
        sources_by_kind_state{};
    std::array<std::uint64_t, source_kind_max> reconnects_by_kind{};
    std::array<double, source_kind_max> busy_seconds{};          ///< reading and emitting
    std::array<double, source_kind_max> idle_seconds{};          ///< waiting for data
    std::array<double, source_kind_max> backpressured_seconds{}; ///< waiting for a buffer
    /// Running sources parked now: idle, waiting as a readiness operation with no coroutine.
    std::array<std::uint32_t, source_kind_max> parked_by_kind{};
    std::uint64_t parks_total = 0;           ///< times a source parked
    histogram_snapshot acquire_wait_seconds; ///< suspended source acquisitions
    histogram_snapshot flush_fill_ratio;     ///< bytes / capacity of emitted buffers
    std::array<std::uint64_t, flush_reason_count> flushes_total{};
    std::array<std::uint64_t, source_kind_max> bytes_total{};
    std::array<std::uint64_t, source_kind_max> errors_total{};
    std::uint64_t buffers_emitted_total = 0;
    std::uint64_t backpressure_waits_total = 0; ///< acquisitions that suspended
    std::uint64_t reconnects_total = 0;
    std::uint64_t registrations_admitted_total = 0;
    std::uint64_t registrations_refused_total = 0;
    std::uint64_t connections_accepted_total = 0; ///< admitted as sources
    std::uint64_t connections_refused_total =
        0; ///< over connections_max, refused by admission, or failed accepts
    std::uint64_t end_of_stream_total = 0;
    std::uint64_t failures_total = 0;
    /// Bytes read and then lost because their buffer could not be queued for processing (out
    /// of memory); each such source ended with an Error that says so.
    std::uint64_t bytes_dropped_total = 0;
    std::uint64_t queue_failures_total = 0; ///< sources ended by such a drop
    /// Accept loops that ended by an exception and were begun again.
    std::uint64_t listener_failures_total = 0;
    std::uint64_t final_events_lost_total = 0; ///< EoS/Error events that could not be queued
    /// Waiting registrations (accepted connections, register_source_waiting) refused at their
    /// deadline or by shutdown.
    std::uint64_t admission_waits_timed_out_total = 0;
    std::uint64_t connections_closed_idle_total = 0; ///< by a listener's idle_timeout
    /// Bounded buffer waits that expired: the source refused what it would have read (429).
    std::uint64_t buffer_refusals_total = 0;
    /// HTTP listeners' answers, by http_answer; requests read; refused body bytes dropped.
    std::array<std::uint64_t, http_answer_count> http_answers_total{};
    std::uint64_t http_requests_total = 0;
    std::uint64_t http_refused_body_bytes_total = 0;
    /// TLS handshakes of listeners' and clients' connections, by result.
    std::uint64_t tls_handshakes_ok_total = 0;
    std::uint64_t tls_handshakes_failed_total = 0;
    std::uint64_t tls_handshakes_timed_out_total = 0;
};

struct server_counters {
    std::array<std::atomic<std::uint64_t>, flush_reason_count> flushes{};
    std::array<std::atomic<std::uint64_t>, source_kind_max> bytes{};
    std::array<std::atomic<std::uint64_t>, source_kind_max> errors{};
    std::atomic<std::uint64_t> buffers_emitted{0};
    std::atomic<std::uint64_t> backpressure_waits{0};
    std::atomic<std::uint64_t> reconnects{0};
    std::atomic<std::uint64_t> admitted{0};
    std::atomic<std::uint64_t> refused{0};
    std::atomic<std::uint64_t> accepted{0};
    std::atomic<std::uint64_t> connections_refused{0};
    std::atomic<std::uint64_t> end_of_stream{0};
    std::atomic<std::uint64_t> failures{0};
    std::atomic<std::uint64_t> bytes_dropped{0};
    std::atomic<std::uint64_t> queue_failures{0};
    std::atomic<std::uint64_t> listener_failures{0};
    std::atomic<std::uint64_t> admission_timeouts{0};
    std::atomic<std::uint64_t> idle_closed{0};
    std::atomic<std::uint64_t> final_events_lost{0};
    std::atomic<std::uint64_t> buffer_refusals{0};
    http_counters http; ///< every HTTP listener's connections
    tls_counters tls;   ///< every TLS listener's connections
    std::array<std::atomic<std::uint64_t>, source_kind_max> reconnects_by_kind{};
    std::array<std::atomic<std::uint64_t>, source_kind_max> busy_ns{};
    std::array<std::atomic<std::uint64_t>, source_kind_max> idle_ns{};
    std::array<std::atomic<std::uint64_t>, source_kind_max> backpressured_ns{};
    std::array<std::atomic<std::uint32_t>, source_kind_max> parked{};
    std::atomic<std::uint64_t> parks{0};
    seconds_histogram acquire_wait{seconds_buckets};
    ratio_histogram fill_ratio{ratio_buckets};

    /// Everything but the counts of sources by state (the registry has those).
    void snapshot_into(server_stats& s) const;
};

} // namespace sluice::runtime
