#include "sluice/server/server_stats.hpp"

namespace sluice::runtime {

void server_counters::snapshot_into(server_stats& s) const {
    for (std::size_t i = 0; i < source_kind_max; ++i) {
        s.reconnects_by_kind[i] = reconnects_by_kind[i].load(std::memory_order_relaxed);
        s.busy_seconds[i] = static_cast<double>(busy_ns[i].load(std::memory_order_relaxed)) / 1e9;
        s.idle_seconds[i] = static_cast<double>(idle_ns[i].load(std::memory_order_relaxed)) / 1e9;
        s.backpressured_seconds[i] =
            static_cast<double>(backpressured_ns[i].load(std::memory_order_relaxed)) / 1e9;
        s.parked_by_kind[i] = parked[i].load(std::memory_order_relaxed);
    }
    s.acquire_wait_seconds = acquire_wait.snapshot();
    s.flush_fill_ratio = fill_ratio.snapshot();
    for (std::size_t i = 0; i < flush_reason_count; ++i) {
        s.flushes_total[i] = flushes[i].load(std::memory_order_relaxed);
    }
    for (std::size_t i = 0; i < source_kind_max; ++i) {
        s.bytes_total[i] = bytes[i].load(std::memory_order_relaxed);
        s.errors_total[i] = errors[i].load(std::memory_order_relaxed);
    }
    s.buffers_emitted_total = buffers_emitted.load(std::memory_order_relaxed);
    s.backpressure_waits_total = backpressure_waits.load(std::memory_order_relaxed);
    s.reconnects_total = reconnects.load(std::memory_order_relaxed);
    s.parks_total = parks.load(std::memory_order_relaxed);
    s.registrations_admitted_total = admitted.load(std::memory_order_relaxed);
    s.registrations_refused_total = refused.load(std::memory_order_relaxed);
    s.connections_accepted_total = accepted.load(std::memory_order_relaxed);
    s.connections_refused_total = connections_refused.load(std::memory_order_relaxed);
    s.end_of_stream_total = end_of_stream.load(std::memory_order_relaxed);
    s.bytes_dropped_total = bytes_dropped.load(std::memory_order_relaxed);
    s.listener_failures_total = listener_failures.load(std::memory_order_relaxed);
    s.admission_waits_timed_out_total = admission_timeouts.load(std::memory_order_relaxed);
    s.connections_closed_idle_total = idle_closed.load(std::memory_order_relaxed);
    s.queue_failures_total = queue_failures.load(std::memory_order_relaxed);
    s.final_events_lost_total = final_events_lost.load(std::memory_order_relaxed);
    s.failures_total = failures.load(std::memory_order_relaxed);
    s.buffer_refusals_total = buffer_refusals.load(std::memory_order_relaxed);
    for (std::size_t i = 0; i < http_answer_count; ++i) {
        s.http_answers_total[i] = http.answers[i].load(std::memory_order_relaxed);
    }
    s.http_requests_total = http.requests.load(std::memory_order_relaxed);
    s.http_refused_body_bytes_total = http.refused_body_bytes.load(std::memory_order_relaxed);
    s.tls_handshakes_ok_total = tls.ok.load(std::memory_order_relaxed);
    s.tls_handshakes_failed_total = tls.failed.load(std::memory_order_relaxed);
    s.tls_handshakes_timed_out_total = tls.timed_out.load(std::memory_order_relaxed);
}

} // namespace sluice::runtime
