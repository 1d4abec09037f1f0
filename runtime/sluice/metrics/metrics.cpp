#include "sluice/metrics/metrics.hpp"

#include <algorithm>
#include <deque>
#include <iterator>

#include "sluice/env/process_threads.hpp"

namespace sluice::runtime {

namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;
using labels = std::vector<ClientMetric::Label>;

/// Families are kept in a deque while they are filled: a family's reference stays valid when
/// more families are added (a vector with a guessed reserve once moved them, and the samples
/// added through an older reference went to freed memory).
class builder {
public:
    MetricFamily& family(std::string name, std::string help, MetricType type) {
        families_.push_back(MetricFamily{std::move(name), std::move(help), type, {}});
        return families_.back();
    }
    std::vector<MetricFamily> take() {
        return {std::make_move_iterator(families_.begin()),
                std::make_move_iterator(families_.end())};
    }
    void gauge(MetricFamily& f, double value, labels l = {}) {
        ClientMetric m;
        m.label = std::move(l);
        m.gauge.value = value;
        f.metric.push_back(std::move(m));
    }
    void counter(MetricFamily& f, double value, labels l = {}) {
        ClientMetric m;
        m.label = std::move(l);
        m.counter.value = value;
        f.metric.push_back(std::move(m));
    }
    void histogram(MetricFamily& f, const histogram_snapshot& h, labels l = {}) {
        ClientMetric m;
        m.label = std::move(l);
        for (std::size_t i = 0; i < h.upper_bounds.size(); ++i) {
            m.histogram.bucket.push_back({h.cumulative[i], h.upper_bounds[i]});
        }
        const std::uint64_t count = h.cumulative.empty() ? 0 : h.cumulative.back();
        m.histogram.bucket.push_back({count, std::numeric_limits<double>::infinity()});
        m.histogram.sample_count = count;
        m.histogram.sample_sum = h.sum;
        f.metric.push_back(std::move(m));
    }

private:
    std::deque<MetricFamily> families_;
};

double d(std::uint64_t v) {
    return static_cast<double>(v);
}

constexpr const char* requester_names[] = {"source", "processing"};

/// The pool: capacity, buffers by state, reserves, acquisitions and their waits, admission.
void collect_pool(builder& b, const pool_stats& p, std::uint32_t buffer_size, const server_stats& s,
                  const processing_stats& q) {
    b.gauge(b.family("sluice_pool_capacity_buffers", "Buffers in the pool (fixed at start).",
                     MetricType::Gauge),
            d(p.buffer_count));
    b.gauge(b.family("sluice_pool_buffer_size_bytes", "Size of one buffer.", MetricType::Gauge),
            d(buffer_size));
    {
        // Four states that sum to capacity. Snapshots of three components are not taken at the
        // same instant, so source_held absorbs the difference (never below 0).
        const std::uint64_t queued =
            std::min<std::uint64_t>(q.buffers_queued, p.outstanding_sources);
        const std::uint64_t processing_now =
            std::min<std::uint64_t>(q.buffers_in_progress, p.outstanding_sources - queued) +
            p.outstanding_processing;
        const std::uint64_t held = p.buffer_count - p.free - queued - processing_now;
        auto& f = b.family("sluice_pool_buffers",
                           "Buffers by state: free, held by sources (being filled), queued for "
                           "processing, being processed (inputs and outputs). Sums to capacity.",
                           MetricType::Gauge);
        b.gauge(f, d(p.free), {{"state", "free"}});
        b.gauge(f, d(held), {{"state", "source_held"}});
        b.gauge(f, d(queued), {{"state", "queued"}});
        b.gauge(f, d(processing_now), {{"state", "processing"}});
    }
    {
        auto& f = b.family("sluice_pool_reserved_buffers",
                           "Buffers guaranteed by class: the sum of source reserves (admission) "
                           "and the processing reserve.",
                           MetricType::Gauge);
        b.gauge(f, d(p.reserved_sources), {{"class", "sources"}});
        b.gauge(f, d(p.processing_reserve), {{"class", "processing"}});
    }
    b.gauge(b.family("sluice_pool_floating_buffers",
                     "Free buffers not owed to any reserve: what sources above their reserve "
                     "may take.",
                     MetricType::Gauge),
            d(p.floating));
    {
        auto& f = b.family("sluice_pool_acquisitions_total",
                           "Buffer acquisitions by requester and result: immediate, after_wait "
                           "(suspended first), aborted (cancelled or unregistered while waiting), "
                           "unavailable (a try that found none).",
                           MetricType::Counter);
        for (std::size_t r = 0; r < 2; ++r) {
            b.counter(f, d(p.acquired_immediately_total[r]),
                      {{"requester", requester_names[r]}, {"result", "immediate"}});
            b.counter(f, d(p.acquired_after_wait_total[r]),
                      {{"requester", requester_names[r]}, {"result", "after_wait"}});
            b.counter(f, d(p.waits_aborted_total[r]),
                      {{"requester", requester_names[r]}, {"result", "aborted"}});
            b.counter(f, d(p.try_acquire_failed_total[r]),
                      {{"requester", requester_names[r]}, {"result", "unavailable"}});
        }
    }
    {
        auto& f =
            b.family("sluice_pool_acquire_wait_seconds",
                     "Time suspended acquisitions waited for a buffer.", MetricType::Histogram);
        b.histogram(f, s.acquire_wait_seconds, {{"requester", "source"}});
        b.histogram(f, q.output_wait_seconds, {{"requester", "processing"}});
    }
    {
        auto& f = b.family("sluice_pool_waiters", "Acquisitions suspended now, by requester.",
                           MetricType::Gauge);
        b.gauge(f, d(p.waiters_sources), {{"requester", "source"}});
        b.gauge(f, d(p.waiters_processing), {{"requester", "processing"}});
        b.gauge(f, d(p.waiters_admission), {{"requester", "registration"}});
    }
    {
        auto& f = b.family("sluice_registration_waits_total",
                           "Registrations that waited for their reserve (accepted connections, "
                           "register_source_waiting), by outcome.",
                           MetricType::Counter);
        b.counter(f, d(p.admitted_after_wait_total), {{"outcome", "admitted"}});
        b.counter(f, d(s.admission_waits_timed_out_total), {{"outcome", "timed_out"}});
    }
    {
        auto& f = b.family("sluice_registrations_total",
                           "Source registrations by result (refused: admission said no).",
                           MetricType::Counter);
        b.counter(f, d(s.registrations_admitted_total), {{"result", "admitted"}});
        b.counter(f, d(s.registrations_refused_total), {{"result", "refused"}});
    }
}

/// Buffers handed from sources to processing: by reason, and how full.
void collect_flushes(builder& b, const server_stats& s) {
    {
        auto& f =
            b.family("sluice_flushes_total",
                     "Buffers handed from sources to processing, by reason.", MetricType::Counter);
        for (std::size_t i = 1; i < flush_reason_count; ++i) {
            b.counter(f, d(s.flushes_total[i]),
                      {{"reason", std::string(to_string(static_cast<flush_reason>(i)))}});
        }
    }
    b.histogram(b.family("sluice_flush_fill_ratio", "Bytes used / capacity of each flushed buffer.",
                         MetricType::Histogram),
                s.flush_fill_ratio);
}

/// Processing: its queue, its time per buffer, what it dropped, lost bytes.
void collect_processing(builder& b, const processing_stats& q, const server_stats& s) {
    b.gauge(b.family("sluice_processing_queue_depth", "Buffers waiting for processing.",
                     MetricType::Gauge),
            d(q.buffers_queued));
    b.gauge(b.family("sluice_processing_oldest_queued_seconds",
                     "Age of the oldest buffer waiting for processing (0 when none).",
                     MetricType::Gauge),
            q.buffers_queued == 0 ? 0.0 : q.oldest_queued_seconds);
    b.histogram(b.family("sluice_processing_buffer_duration_seconds",
                         "Time to process one buffer (framing, CSV, sink).", MetricType::Histogram),
                q.buffer_seconds);
    b.counter(
        b.family("sluice_processing_buffers_total", "Buffers processed.", MetricType::Counter),
        d(q.buffers_total));
    b.counter(b.family("sluice_processing_records_dropped_total",
                       "Records longer than record_bytes_max, dropped.", MetricType::Counter),
              d(q.records_dropped_total));
    b.counter(b.family("sluice_processing_records_truncated_total",
                       "Unfinished records dropped at a stream discontinuity (a reconnect, a "
                       "restart) or where the stream ended; never joined to other bytes.",
                       MetricType::Counter),
              d(q.records_truncated_total));
    b.counter(b.family("sluice_sink_failures_total",
                       "Origins failed because the sink threw for one of their buffers.",
                       MetricType::Counter),
              d(q.sink_failures_total));
    {
        auto& f = b.family("sluice_lost_bytes_total",
                           "Bytes read and not delivered, by reason: discarded (their origin had "
                           "failed in the sink) or dropped (their buffer could not be queued for "
                           "processing; the source ended with an Error).",
                           MetricType::Counter);
        b.counter(f, d(q.bytes_discarded_total), {{"reason", "discarded"}});
        b.counter(f, d(s.bytes_dropped_total), {{"reason", "dropped"}});
    }
}

/// Sources by kind and state, their bytes, records, errors, reconnects and time; listeners.
/// HTTP listeners: requests, answers by status code (429 is backpressure answered), and the
/// body bytes refused ones sent.
void collect_http(builder& b, const server_stats& s) {
    b.counter(
        b.family("sluice_http_requests_total", "HTTP request headers read.", MetricType::Counter),
        d(s.http_requests_total));
    {
        auto& f = b.family("sluice_http_responses_total",
                           "HTTP answers, by status code (204: the body was queued for "
                           "processing; 429: no buffer within buffer_wait_ms).",
                           MetricType::Counter);
        for (std::size_t i = 0; i < http_answer_count; ++i) {
            b.counter(f, d(s.http_answers_total[i]),
                      {{"code", std::to_string(status_code(static_cast<http_answer>(i)))}});
        }
    }
    b.counter(b.family("sluice_http_refused_body_bytes_total",
                       "Body bytes of refused HTTP requests (4xx, 429), read and dropped.",
                       MetricType::Counter),
              d(s.http_refused_body_bytes_total));
    {
        auto& f =
            b.family("sluice_tls_handshakes_total",
                     "TLS handshakes of listeners' connections, by result.", MetricType::Counter);
        b.counter(f, d(s.tls_handshakes_ok_total), {{"result", "ok"}});
        b.counter(f, d(s.tls_handshakes_failed_total), {{"result", "failed"}});
        b.counter(f, d(s.tls_handshakes_timed_out_total), {{"result", "timed_out"}});
    }
    b.counter(b.family("sluice_buffer_refusals_total",
                       "Bounded buffer waits that expired: the source refused what it would have "
                       "read (an HTTP 429).",
                       MetricType::Counter),
              d(s.buffer_refusals_total));
}

void collect_sources(builder& b, const server_stats& s, const processing_stats& q) {
    {
        auto& f =
            b.family("sluice_sources", "Registered sources by kind and state.", MetricType::Gauge);
        for (std::size_t k = 0; k < source_kinds_defined(); ++k) {
            for (std::size_t st = 0; st < source_state_count; ++st) {
                b.gauge(f, d(s.sources_by_kind_state[k][st]),
                        {{"kind", std::string(to_string(static_cast<source_kind>(k)))},
                         {"state", std::string(to_string(static_cast<source_state>(st)))}});
            }
        }
    }
    auto& parked =
        b.family("sluice_sources_parked",
                 "Running sources parked: idle, waiting for data as a readiness operation "
                 "without a coroutine, by kind.",
                 MetricType::Gauge);
    auto& bytes = b.family("sluice_source_received_bytes_total", "Bytes read by sources, by kind.",
                           MetricType::Counter);
    auto& records = b.family("sluice_source_received_records_total",
                             "Records framed from sources' bytes, by kind.", MetricType::Counter);
    auto& errors =
        b.family("sluice_source_errors_total",
                 "Transport failures (each reconnect attempt or final failure), by kind.",
                 MetricType::Counter);
    auto& reconnects = b.family("sluice_source_reconnects_total",
                                "Reconnects after a failure, by kind.", MetricType::Counter);
    auto& seconds = b.family("sluice_source_seconds_total",
                             "Time sources spent busy (reading, emitting), idle (waiting for data) "
                             "and backpressured (waiting for a buffer), by kind.",
                             MetricType::Counter);
    for (std::size_t k = 0; k < source_kinds_defined(); ++k) {
        const std::string kind(to_string(static_cast<source_kind>(k)));
        b.gauge(parked, d(s.parked_by_kind[k]), {{"kind", kind}});
        b.counter(bytes, d(s.bytes_total[k]), {{"kind", kind}});
        b.counter(records, d(q.records_by_kind[k]), {{"kind", kind}});
        b.counter(errors, d(s.errors_total[k]), {{"kind", kind}});
        b.counter(reconnects, d(s.reconnects_by_kind[k]), {{"kind", kind}});
        b.counter(seconds, s.busy_seconds[k], {{"kind", kind}, {"activity", "busy"}});
        b.counter(seconds, s.idle_seconds[k], {{"kind", kind}, {"activity", "idle"}});
        b.counter(seconds, s.backpressured_seconds[k],
                  {{"kind", kind}, {"activity", "backpressured"}});
    }
    {
        auto& f = b.family("sluice_listener_connections_total",
                           "TCP connections offered to listeners, by result.", MetricType::Counter);
        b.counter(f, d(s.connections_accepted_total), {{"result", "accepted"}});
        b.counter(f, d(s.connections_refused_total), {{"result", "refused"}});
    }
    b.counter(b.family("sluice_connections_idle_closed_total",
                       "Accepted connections closed by their listener's idle_timeout_ms.",
                       MetricType::Counter),
              d(s.connections_closed_idle_total));
    b.counter(b.family("sluice_listener_failures_total",
                       "Accept loops that failed (an exception) and were begun again.",
                       MetricType::Counter),
              d(s.listener_failures_total));
    collect_http(b, s);
}

/// At-least-once delivery: how far processing trails tracked sources (processed positions), and
/// the checkpoints that carry those positions across a restart.
void collect_delivery(builder& b, const processing_stats& q, const checkpoint_stats& c) {
    auto& lag_bytes = b.family("sluice_processed_lag_bytes",
                               "Bytes of sources that track processed positions (files with "
                               "checkpoints) read and not yet processed, by kind.",
                               MetricType::Gauge);
    auto& lag_seconds = b.family("sluice_processed_lag_seconds",
                                 "Longest time a tracked source's processed position has not "
                                 "moved while its bytes wait, by kind.",
                                 MetricType::Gauge);
    for (std::size_t k = 0; k < source_kinds_defined(); ++k) {
        const std::string kind(to_string(static_cast<source_kind>(k)));
        b.gauge(lag_bytes, d(q.processed_lag_bytes[k]), {{"kind", kind}});
        b.gauge(lag_seconds, q.processed_lag_seconds[k], {{"kind", kind}});
    }
    {
        auto& f =
            b.family("sluice_checkpoint_writes_total",
                     "Checkpoint saves (write, fsync, rename), by result.", MetricType::Counter);
        b.counter(f, d(c.writes_total), {{"result", "ok"}});
        b.counter(f, d(c.write_failures_total), {{"result", "failed"}});
    }
    {
        auto& f = b.family("sluice_checkpoint_loads_total",
                           "Checkpoints read at a source's first open, by result (failed: "
                           "unreadable, corrupt or foreign; the source failed naming the file).",
                           MetricType::Counter);
        b.counter(f, d(c.loads_total), {{"result", "ok"}});
        b.counter(f, d(c.load_failures_total), {{"result", "failed"}});
    }
    {
        auto& f = b.family("sluice_checkpoint_resumes_total",
                           "Sources' first opens with a checkpoint, by outcome (resumed at its "
                           "offset; from_start: the file was replaced or shortened).",
                           MetricType::Counter);
        b.counter(f, d(c.resumes_total), {{"outcome", "resumed"}});
        b.counter(f, d(c.restarts_from_zero_total), {{"outcome", "from_start"}});
    }
    b.counter(b.family("sluice_checkpoint_resumed_bytes_total",
                       "Bytes sources did not read again because they resumed from a checkpoint.",
                       MetricType::Counter),
              d(c.resumed_bytes_total));
    b.gauge(b.family("sluice_checkpoint_unsaved_bytes",
                     "Bytes processed and not yet in a saved checkpoint: what a crash now would "
                     "deliver again (at least once).",
                     MetricType::Gauge),
            d(c.unsaved_bytes));
}

/// The fixed pools' threads and load, and the process's threads.
void collect_threads(builder& b, const thread_pools& threads, const processing_stats& q) {
    {
        auto& f = b.family("sluice_thread_pool_threads", "Threads of each fixed pool.",
                           MetricType::Gauge);
        b.gauge(f, d(threads.io_threads), {{"pool", "io"}});
        b.gauge(f, d(threads.compute_threads), {{"pool", "compute"}});
        b.gauge(f, d(threads.blocking_threads), {{"pool", "blocking"}});
    }
    {
        const pool_load io = threads.io_load ? threads.io_load() : pool_load{};
        const pool_load blocking = threads.blocking_load ? threads.blocking_load() : pool_load{};
        auto& queued = b.family("sluice_thread_pool_queued_tasks",
                                "Tasks waiting for a thread of a pool (io: handlers dispatched to "
                                "a lane and not started; compute: processing items queued; "
                                "blocking: reads posted and not started).",
                                MetricType::Gauge);
        b.gauge(queued, d(io.queued), {{"pool", "io"}});
        b.gauge(queued, d(q.queued), {{"pool", "compute"}});
        b.gauge(queued, d(blocking.queued), {{"pool", "blocking"}});
        auto& active = b.family("sluice_thread_pool_active_tasks",
                                "Tasks running on a pool now (io: lane handlers running; compute: "
                                "buffers being processed; blocking: reads in progress).",
                                MetricType::Gauge);
        b.gauge(active, d(io.active), {{"pool", "io"}});
        b.gauge(active, d(q.buffers_in_progress), {{"pool", "compute"}});
        b.gauge(active, d(blocking.active), {{"pool", "blocking"}});
    }
    b.gauge(b.family("sluice_process_threads", "Threads of the process (/proc/self/task).",
                     MetricType::Gauge),
            d(process_thread_count()));
}

} // namespace

metrics_collector::metrics_collector(const buffer_pool& pool, const source_server& server,
                                     const processing& pipeline, thread_pools threads,
                                     std::string version)
    : pool_(pool), server_(server), pipeline_(pipeline), threads_(std::move(threads)),
      version_(std::move(version)) {}

std::vector<MetricFamily> metrics_collector::Collect() const {
    const pool_stats p = pool_.stats();
    const server_stats s = server_.stats();
    const processing_stats q = pipeline_.stats();
    builder b;

    b.gauge(
        b.family("sluice_build_info", "Build of the running worker; always 1.", MetricType::Gauge),
        1.0, {{"version", version_}});

    collect_pool(b, p, pool_.config().buffer_size_bytes, s, q);
    collect_flushes(b, s);
    collect_processing(b, q, s);
    collect_sources(b, s, q);
    collect_threads(b, threads_, q);
    collect_delivery(b, q, checkpoints_ != nullptr ? checkpoints_->stats() : checkpoint_stats{});
    return b.take();
}

} // namespace sluice::runtime
