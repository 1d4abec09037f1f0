/// sluice-ingest-bench: one measurement of the ingestion path for one runner mode and one source
/// count, printed as a JSON line. `ci/bench` runs it for sluice and the thread-per-source
/// baseline at 10 … 10,000 sources and writes bench/RESULTS.md.
///
/// Phases (each with the same pool, processing pipeline and verifying sink):
///   accept    sluice-loadgen (its own process) connects N TCP connections and holds them idle:
///             time until the worker runs N sources, threads, resident memory per idle source
///   ingest    the held connections send R records each flat out: time until the last byte is
///             in the pipeline, GB/s, the worker's CPU seconds per GB; after the clock stops,
///             every origin is checked: its generator's records exactly (XXH3-64 of the bytes,
///             byte and record counts; record by record with --check-records), every generator
///             id once, end of stream on each
///   start     register and start N idle generator sources in process; time until all run
///   latency   (--latency) M connections at a light rate; the record carries its send time and
///             the sink measures send-to-pipeline: p50/p99. `--no-demand` turns off the demand
///             flush so partial buffers wait for the flush timeout (the comparison).
/// Exit status 0 when every byte sent arrived intact, 1 when anything was lost or wrong.

#include <malloc.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "apps/baseline/baseline_runner.hpp"
#include "sluice/env/process_threads.hpp"
#include "sluice/env/production_environment.hpp"
#include "sluice/pipeline/processing.hpp"
#include "sluice/pool/buffer_pool.hpp"
#include "sluice/server/source_server.hpp"
#include "sluice/source/generator_records.hpp"
#include "sluice/source/generator_source.hpp"
#include "sluice/worker.hpp"
#include "testing/process.hpp"
#include "testing/test_certificates.hpp"

namespace {

using namespace sluice::runtime;
using clock_type = std::chrono::steady_clock;

struct bench_options {
    std::string mode = "sluice"; ///< sluice | thread_per_source
    std::uint32_t sources = 100;
    std::uint64_t total_bytes = 200'000'000; ///< ingest phase: about this much over all connections
    std::uint32_t buffer_bytes = 16384;
    std::uint32_t baseline_buffers_per_source = 2;
    bool latency = false;
    double rate = 200.0; ///< latency: records/s per connection
    double latency_seconds = 3.0;
    bool demand = true;
    bool park = true; ///< sluice: idle sources park (server_options::park_idle)
    std::string loadgen = SLUICE_LOADGEN;
    std::uint32_t io_threads = 2;
    std::uint32_t compute_threads = 2;
    std::uint32_t pad_bytes = 0;   ///< ingest: a padding field this long in every record
    bool check_records = false;    ///< ingest: check every record as it arrives, not the checksum
    bool corrupt_one_byte = false; ///< ingest: the verification's self-test (must exit 1)
    std::uint32_t chunk_bytes = 16384; ///< ingest: the load generator's bytes per write
    /// ingest: tcp, http (POST bodies on keep-alive connections), tls, or https.
    std::string transport = "tcp";
    bool http() const { return transport == "http" || transport == "https"; }
    bool tls() const { return transport == "tls" || transport == "https"; }
};

// ---------------------------------------------------------------------------------------------
// Measurement helpers (the bench's own clock and /proc; not runtime code).

/// VmRSS of this process in KiB.
std::uint64_t rss_kib() {
    std::ifstream status("/proc/self/status");
    std::string line;
    while (std::getline(status, line)) {
        if (line.rfind("VmRSS:", 0) == 0) {
            return std::stoull(line.substr(6));
        }
    }
    return 0;
}

/// Heap bytes in use (malloc's chunks, all arenas): what RSS holds minus free space and pages.
std::uint64_t heap_in_use_bytes() {
    return mallinfo2().uordblks;
}

/// Polls `done` every millisecond up to `bound`; true when it held.
template <typename Done> bool wait_until(Done done, std::chrono::milliseconds bound) {
    const auto deadline = clock_type::now() + bound;
    while (!done()) {
        if (clock_type::now() >= deadline) {
            return done();
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return true;
}

/// A number of the last JSON line of a program's output that has `key` (Boost.JSON), or -1.
double json_number(const std::string& json, const std::string& key) {
    const auto v = sluice::test::json_member(json, key);
    return v.is_number() ? v.to_number<double>() : -1;
}

/// sluice-loadgen in its own process (stdout and stderr to files read back here).
std::unique_ptr<sluice::test::child_process> start_loadgen(const std::vector<std::string>& argv) {
    auto load = std::make_unique<sluice::test::child_process>(argv, "sluice-ingest-" +
                                                                        std::to_string(::getpid()));
    if (!load->started()) {
        throw std::runtime_error("cannot start " + argv[0] +
                                 "; build sluice-loadgen or pass --loadgen");
    }
    return load;
}

// ---------------------------------------------------------------------------------------------
// The sink: hashes every origin's bytes for verify() (ingest) or measures latency (latency mode).

class bench_sink final : public sink {
public:
    /// What the sink keeps. `count`: totals only (the start phase, whose data is not verified;
    /// per-origin state would be the harness's allocations inside the timed start). `verify`:
    /// per-origin state for verify(). `latency`: per-origin send-to-pipeline latencies.
    enum class use { count, verify, latency };

    /// `check_records`: check each record as it arrives (the generator's record formatted again
    /// and compared: exact diagnostics, but about 40% of the worker's CPU with 19-byte records)
    /// instead of a hash per origin (XXH3-64, streaming, so the hash does not depend on how the
    /// records were split into deliveries). `corrupt_one_byte`: the harness's self-test; the first
    /// data of one origin is checked with a byte flipped, and verify() must report it.
    bench_sink(use what, bool check_records, bool corrupt_one_byte)
        : use_(what), check_records_(check_records), corrupt_one_byte_(corrupt_one_byte) {}

    void on_data(const data_event& event) override {
        bytes_.fetch_add(event.raw.size(), std::memory_order_relaxed);
        records_.fetch_add(event.record_count, std::memory_order_relaxed);
        last_data_ns_.store(now_ns(), std::memory_order_relaxed);
        if (use_ == use::count) {
            return;
        }
        per_origin& o = origin(event.origin_id);
        if (use_ == use::latency) {
            const std::int64_t now = now_ns();
            measure(o, event.spanning_record, now);
            measure(o, event.records, now);
            return;
        }
        // Calls for one origin never overlap (the sink contract): no lock on `o`.
        std::string flipped;
        std::span<const std::byte> records = event.records;
        if (corrupt_one_byte_ && !records.empty() && !corrupted_.exchange(true)) {
            flipped.assign(reinterpret_cast<const char*>(records.data()), records.size());
            flipped[flipped.size() / 2] ^= 0x01;
            records = std::as_bytes(std::span(flipped));
        }
        for (const auto part : {event.spanning_record, records}) {
            if (part.empty()) {
                continue;
            }
            if (o.generator_id < 0) {
                o.generator_id = leading_id(part);
            }
            if (check_records_) {
                o.checker.feed(part);
            } else {
                XXH3_64bits_update(o.hash.get(), part.data(), part.size());
            }
            o.bytes += part.size();
        }
        o.records += event.record_count;
    }
    void on_end_of_stream(std::uint64_t origin_id) override {
        if (use_ != use::count) {
            origin(origin_id).ended = true;
        }
        end_of_stream_.fetch_add(1, std::memory_order_relaxed);
    }
    void on_error(std::uint64_t origin_id, std::string_view message) override {
        errors_.fetch_add(1, std::memory_order_relaxed);
        const std::lock_guard lock(mutex_);
        if (problems_.size() < 10) {
            problems_.push_back("origin " + std::to_string(origin_id) + ": " +
                                std::string(message));
        }
    }

    std::uint64_t bytes() const { return bytes_.load(std::memory_order_relaxed); }
    std::uint64_t records() const { return records_.load(std::memory_order_relaxed); }
    std::uint64_t end_of_stream() const { return end_of_stream_.load(std::memory_order_relaxed); }
    std::int64_t last_data_ns() const { return last_data_ns_.load(std::memory_order_relaxed); }

    /// Every origin ended with exactly `records_each` valid records of `pad_bytes` padding, and
    /// there are `origins`. With the checksum, each origin's records are formatted here, after
    /// the clock has stopped, and their XXH3-64 hash and size must match what arrived.
    std::vector<std::string> verify(std::size_t origins, std::uint64_t records_each,
                                    std::size_t pad_bytes) {
        std::vector<std::string> problems;
        const std::lock_guard lock(mutex_);
        problems = problems_;
        if (origins_.size() != origins) {
            problems.push_back(std::to_string(origins_.size()) +
                               " origins delivered data, expected " + std::to_string(origins));
        }
        // Each generator id 0 … origins-1 exactly once: an origin whose stream is whole but
        // another origin's would pass the per-origin checks below.
        std::vector<std::uint32_t> seen(origins, 0);
        for (const auto& [id, o] : origins_) {
            if (o->generator_id < 0 || static_cast<std::uint64_t>(o->generator_id) >= origins) {
                problems.push_back("origin " + std::to_string(id) + ": generator id " +
                                   std::to_string(o->generator_id) + ", expected 0 to " +
                                   std::to_string(origins - 1));
            } else if (++seen[static_cast<std::size_t>(o->generator_id)] == 2) {
                problems.push_back("generator " + std::to_string(o->generator_id) +
                                   " arrived on more than one origin");
            }
            if (problems.size() >= 10) {
                return problems;
            }
        }
        for (const auto& [id, o] : origins_) {
            if (problems.size() >= 10) {
                break;
            }
            const std::string where = "origin " + std::to_string(id) + " (generator " +
                                      std::to_string(o->generator_id) + "): ";
            if (check_records_ && !o->checker.ok()) {
                problems.push_back(where + o->checker.problem());
            } else if (check_records_ && o->checker.next_record() != records_each) {
                problems.push_back(where + std::to_string(o->checker.next_record()) +
                                   " records checked, expected " + std::to_string(records_each));
            } else if (o->records != records_each) {
                problems.push_back(where + std::to_string(o->records) + " records, expected " +
                                   std::to_string(records_each));
            } else if (!check_records_) {
                const auto [bytes, hash] = expected(o->generator_id, records_each, pad_bytes);
                const XXH64_hash_t got = XXH3_64bits_digest(o->hash.get());
                if (o->bytes != bytes || got != hash) {
                    problems.push_back(
                        where + std::to_string(o->bytes) + " bytes with XXH3-64 " + hex(got) +
                        ", expected " + std::to_string(bytes) + " bytes with " + hex(hash) +
                        " (rerun with --check-records to find the first wrong record)");
                }
            }
            if (problems.size() < 10 && !o->ended) {
                problems.push_back(where + "no end of stream");
            }
        }
        return problems;
    }

    /// Every latency sample over every origin (ns), sorted.
    std::vector<std::int64_t> latencies() {
        const std::lock_guard lock(mutex_);
        std::vector<std::int64_t> all;
        for (const auto& [id, o] : origins_) {
            all.insert(all.end(), o->latency.begin(), o->latency.end());
        }
        std::sort(all.begin(), all.end());
        return all;
    }

private:
    struct per_origin {
        struct free_state {
            void operator()(XXH3_state_t* state) const noexcept { XXH3_freeState(state); }
        };
        per_origin() : hash(XXH3_createState()) {
            if (!hash || XXH3_64bits_reset(hash.get()) != XXH_OK) {
                throw std::bad_alloc();
            }
        }
        sluice::runtime::generator_record_checker checker; ///< with check_records
        std::unique_ptr<XXH3_state_t, free_state> hash;    ///< of every byte delivered, in order
        std::uint64_t bytes = 0;
        std::uint64_t records = 0;
        std::int64_t generator_id = -1; ///< the first record's id field
        std::vector<std::int64_t> latency;
        bool ended = false;
    };

    /// The id field that starts a record ("<id>,"), or -1 when there is none (or it has more
    /// than 18 digits, which no generator here has).
    static std::int64_t leading_id(std::span<const std::byte> bytes) {
        std::int64_t id = 0;
        for (std::size_t i = 0; i < bytes.size() && i <= 18; ++i) {
            const auto ch = static_cast<char>(bytes[i]);
            if (ch == ',') {
                return i == 0 ? -1 : id;
            }
            if (ch < '0' || ch > '9') {
                return -1;
            }
            id = id * 10 + (ch - '0');
        }
        return -1;
    }

    /// Size and XXH3-64 hash of generator `id`'s records [0, count) with `pad_bytes` padding.
    static std::pair<std::uint64_t, XXH64_hash_t> expected(std::int64_t id, std::uint64_t count,
                                                           std::size_t pad_bytes) {
        if (id < 0) {
            return {0, 0};
        }
        sluice::runtime::generator_record_writer writer(static_cast<std::uint64_t>(id), 0,
                                                        pad_bytes);
        const per_origin reference;
        std::string block(65536 + writer.record_bytes_max(), '\0');
        std::size_t used = 0;
        std::uint64_t bytes = 0;
        for (std::uint64_t k = 0; k <= count; ++k) {
            if (k == count || used >= 65536) {
                XXH3_64bits_update(reference.hash.get(), block.data(), used);
                bytes += used;
                used = 0;
            }
            if (k < count) {
                used += writer.write_next(block.data() + used);
            }
        }
        return {bytes, XXH3_64bits_digest(reference.hash.get())};
    }

    static std::string hex(std::uint64_t value) {
        char text[24];
        std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(value));
        return text;
    }

    static std::int64_t now_ns() {
        return std::chrono::duration_cast<std::chrono::nanoseconds>(
                   clock_type::now().time_since_epoch())
            .count();
    }

    per_origin& origin(std::uint64_t id) {
        const std::lock_guard lock(mutex_);
        auto& slot = origins_[id];
        if (!slot) {
            slot = std::make_unique<per_origin>();
        }
        return *slot;
    }

    /// Records "<id>,<n>,<send ns>\n": adds now - send to the origin's histogram.
    static void measure(per_origin& o, std::span<const std::byte> records, std::int64_t now) {
        const char* p = reinterpret_cast<const char*>(records.data());
        const char* end = p + records.size();
        while (p < end) {
            const char* nl =
                static_cast<const char*>(std::memchr(p, '\n', static_cast<std::size_t>(end - p)));
            if (nl == nullptr) {
                break;
            }
            const char* comma =
                static_cast<const char*>(std::memchr(p, ',', static_cast<std::size_t>(nl - p)));
            const char* second =
                comma == nullptr ? nullptr
                                 : static_cast<const char*>(std::memchr(
                                       comma + 1, ',', static_cast<std::size_t>(nl - comma - 1)));
            if (second != nullptr) {
                const std::int64_t sent = std::strtoll(second + 1, nullptr, 10);
                o.latency.push_back(now - sent);
            }
            p = nl + 1;
        }
    }

    use use_; ///< what the sink keeps (see use)
    bool check_records_;
    bool corrupt_one_byte_;
    std::atomic<bool> corrupted_{false};
    std::atomic<std::uint64_t> bytes_{0};
    std::atomic<std::uint64_t> records_{0};
    std::atomic<std::uint64_t> end_of_stream_{0};
    std::atomic<std::uint64_t> errors_{0};
    std::atomic<std::int64_t> last_data_ns_{0};
    std::mutex mutex_;
    std::map<std::uint64_t, std::unique_ptr<per_origin>> origins_;
    std::vector<std::string> problems_;
};

// ---------------------------------------------------------------------------------------------
// One worker: sluice::worker, and the baseline beside it on the same pool and pipeline.

class bench_worker {
public:
    bench_worker(const bench_options& o, std::uint32_t sources, bench_sink::use what)
        : o_(o), sink_(what, o.check_records, o.corrupt_one_byte),
          core_(sink_,
                {pool_for(o, sources), production_options{o.io_threads, o.compute_threads, 1},
                 processing_options{}, server_for(o)}),
          pool_(core_.pool()), env_(core_.environment()), pipeline_(core_.pipeline()),
          server_(core_.server()), baseline_(pool_, pipeline_, o.baseline_buffers_per_source) {}
    bench_worker(const bench_worker&) = delete;
    bench_worker& operator=(const bench_worker&) = delete;
    ~bench_worker() { shutdown(); }

    bool sluice() const { return o_.mode == "sluice"; }

    /// Opens the listener; returns its port (0 on failure).
    std::uint16_t listen(std::uint32_t connections) {
        listener_options l;
        l.connections_max = connections + 16;
        l.limits = source_limits{1, 4};
        l.backlog = 4096;
        if (o_.http()) {
            l.http.emplace();
            l.http->body_bytes_max = std::uint64_t{1} << 24U;
        }
        if (o_.tls()) {
            // Certificates made for this run (sluice::test::certs: openssl at run time).
            if (!sluice::test::certs().ok) {
                std::cerr << "ingest-bench: " << sluice::test::certs().problem << "\n";
                return 0;
            }
            l.tls.emplace();
            l.tls->certificate_file = sluice::test::certs().path("server.pem");
            l.tls->key_file = sluice::test::certs().path("server.key");
        }
        const auto [error, port] =
            sluice() ? server_.add_tcp_listener(l) : baseline_.add_tcp_listener(l);
        if (error) {
            std::cerr << "ingest-bench: listen: " << error.message() << "\n";
            return 0;
        }
        return port;
    }

    /// Registers and starts `n` idle (paced, nearly silent) generators.
    void add_idle_generators(std::uint32_t n) {
        std::vector<source_handle> handles;
        handles.reserve(n);
        // Timed as a whole loop: clock reads around each call would add to what they time.
        const auto registering = clock_type::now();
        for (std::uint32_t i = 0; i < n; ++i) {
            source_options options;
            options.name = "idle#" + std::to_string(i);
            options.limits = source_limits{1, 2};
            generator_options g;
            g.id = i;
            g.records_per_second = 0.001;
            g.burst_records = 1;
            if (sluice()) {
                const auto answer = server_.register_source(
                    options, [g](environment& e, const executor& lane) -> std::unique_ptr<source> {
                        return std::make_unique<generator_source>(e, lane, g);
                    });
                if (answer.admitted()) {
                    handles.push_back(answer.handle);
                } else {
                    std::cerr << "ingest-bench: " << answer.message << "\n";
                }
            } else {
                source_spec spec;
                spec.kind = source_kind::generator;
                spec.generator = g;
                const auto answer = baseline_.add(options, spec, g);
                if (!answer.admitted()) {
                    std::cerr << "ingest-bench: " << answer.message << "\n";
                }
            }
        }
        register_seconds += std::chrono::duration<double>(clock_type::now() - registering).count();
        // Both runners start all at once, as a worker starts its configured sources.
        if (sluice()) {
            const auto t0 = clock_type::now();
            server_.start(handles);
            start_call_seconds += std::chrono::duration<double>(clock_type::now() - t0).count();
        } else {
            baseline_.start_all();
        }
    }

    /// Idle generators that have run their first step (read their first record and emitted or
    /// held it). A baseline thread has been through its loop once; a parking sluice source has
    /// parked at the end of the step (its next record is 1,000 s away). With parking off, no
    /// counter marks a step's end, so sluice counts once the lanes' queues are empty (running()).
    /// That was the count for both until 2026-11-27; it was met as soon as the start handlers
    /// had begun (a running handler is no longer queued), so it could read early (7 ms where
    /// the steps took 15–20), or late, behind demand-flush wake-ups posted meanwhile.
    std::uint64_t first_steps() const {
        if (!sluice()) {
            return baseline_.first_step_count();
        }
        return o_.park ? server_.parks_total() : running();
    }

    /// Sources running now; for sluice, only once the lanes have run every start.
    std::uint64_t running() const {
        if (!sluice()) {
            return baseline_.running_count();
        }
        const auto load = env_.io_load();
        if (load.queued != 0) {
            return 0;
        }
        return server_.stats().sources_by_state[static_cast<std::size_t>(source_state::running)];
    }

    void shutdown() {
        if (down_) {
            return;
        }
        down_ = true;
        baseline_.shutdown();
        core_.shutdown();
    }

    bench_sink& out() { return sink_; }
    double register_seconds = 0;   ///< the registration loop (either runner)
    double start_call_seconds = 0; ///< sluice: time inside start (the rest is the lanes' work)
    const buffer_pool& pool() const { return pool_; }
    std::uint64_t backpressure_waits() const { return server_.stats().backpressure_waits_total; }
    /// Buffers emitted by reason (sluice: the server's counts; baseline: its own).
    std::array<std::uint64_t, flush_reason_count> flushes() const {
        return sluice() ? server_.stats().flushes_total : baseline_.stats().flushes_total;
    }

private:
    static pool_config pool_for(const bench_options& o, std::uint32_t sources) {
        pool_config c;
        const std::uint32_t per_source = o.mode == "sluice" ? 1 : o.baseline_buffers_per_source;
        c.processing_reserve = 64;
        c.buffer_count = sources * per_source + c.processing_reserve + 256;
        c.buffer_size_bytes = o.buffer_bytes;
        c.sources_max = sources + 64;
        return c;
    }
    static server_options server_for(const bench_options& o) {
        server_options s;
        s.demand_flush = o.demand;
        s.park_idle = o.park;
        return s;
    }

    bench_options o_;
    bench_sink sink_;
    sluice::worker core_;
    buffer_pool& pool_;
    production_environment& env_;
    processing& pipeline_;
    source_server& server_;
    baseline_runner baseline_;
    bool down_ = false;
};

/// {"<reason>": buffers, ...}
boost::json::object flushes_json(const std::array<std::uint64_t, flush_reason_count>& flushes) {
    boost::json::object out;
    for (std::size_t i = 0; i < flush_reason_count; ++i) {
        out[to_string(static_cast<flush_reason>(i))] = flushes[i];
    }
    return out;
}

struct start_times {
    double total = 0;         ///< first registration until every source runs
    double registering = 0;   ///< the registration loop (either runner)
    double calling_start = 0; ///< sluice: inside start (the rest is the lanes' work)
    std::string problem;
};

/// Registers and starts N idle generators in a fresh worker; times it.
start_times start_idle_generators(const bench_options& o) {
    start_times t;
    bench_worker idle(o, o.sources, bench_sink::use::count);
    const auto t0 = clock_type::now();
    idle.add_idle_generators(o.sources);
    const bool all =
        wait_until([&] { return idle.first_steps() >= o.sources; }, std::chrono::seconds(120));
    t.total = std::chrono::duration<double>(clock_type::now() - t0).count();
    t.registering = idle.register_seconds;
    t.calling_start = idle.start_call_seconds;
    if (!all) {
        t.problem = "only " + std::to_string(idle.first_steps()) + " of " +
                    std::to_string(o.sources) + " idle generators started";
    }
    return t;
}

/// `value` rounded to `digits` decimals: the reports say what was measured, not float noise.
double fixed(double value, int digits) {
    const double scale = std::pow(10.0, digits);
    return std::round(value * scale) / scale;
}

// ---------------------------------------------------------------------------------------------

/// Phase 1's numbers: N idle TCP connections accepted and settled.
struct idle_measure {
    double accept_seconds = 0.0;
    std::size_t threads_before = 0;
    std::size_t threads_idle = 0;
    std::uint64_t rss_before_kib = 0;
    std::uint64_t rss_idle_kib = 0;
    std::uint64_t heap_before = 0;
    std::uint64_t heap_idle = 0;
};

/// Waits for the load generator to render its records and connect, and for every connection
/// to run; then lets the idle state settle. Empty (said on stderr) when it does not happen.
std::optional<idle_measure> accept_idle(const bench_options& o, bench_worker& w,
                                        sluice::test::child_process& load, idle_measure m) {
    // With unpadded records the load generator writes them all into memory first (so that
    // sending measures the worker, not its formatting); it connects after that.
    const auto rendered = [&] { return load.out().find("\"rendered\"") != std::string::npos; };
    if (!wait_until(rendered, std::chrono::seconds(120))) {
        std::cerr << "ingest-bench: the load generator had not written its records after 120 s: "
                  << load.out() << load.err() << "\n";
        return std::nullopt;
    }
    const auto t_accept = clock_type::now();
    const bool connected =
        wait_until([&] { return load.out().find("\"connected\"") != std::string::npos; },
                   std::chrono::seconds(120));
    const bool accepted = connected && wait_until([&] { return w.running() >= o.sources; },
                                                  std::chrono::seconds(120));
    m.accept_seconds = std::chrono::duration<double>(clock_type::now() - t_accept).count();
    if (!accepted) {
        std::cerr << "ingest-bench: " << w.running() << " of " << o.sources
                  << " connections running; loadgen: " << load.out() << load.err() << "\n";
        return std::nullopt;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(300)); // let idle state settle
    m.rss_idle_kib = rss_kib();
    m.heap_idle = heap_in_use_bytes();
    m.threads_idle = process_thread_count();
    return m;
}

/// Phase 2's numbers: everything sent; the time until the last byte was in the pipeline.
struct send_measure {
    bool sent = false;      ///< the load generator reported it had sent everything
    bool delivered = false; ///< and the worker had every byte and every end of stream
    int load_rc = -1;
    std::string report; ///< the load generator's JSON line
    std::uint64_t bytes_sent = 0;
    std::uint64_t bytes = 0; ///< delivered
    double seconds = 0.0;
    double cpu = 0.0;
    std::size_t threads_max = 0;
    std::array<std::uint64_t, flush_reason_count> flushes{};
    std::uint64_t backpressure = 0;
};

send_measure send_all(const bench_options& o, bench_worker& w, sluice::test::child_process& load,
                      std::size_t threads_idle) {
    send_measure m;
    const double cpu0 = process_cpu_seconds();
    const auto t_go = clock_type::now();
    const std::int64_t go_ns =
        std::chrono::duration_cast<std::chrono::nanoseconds>(t_go.time_since_epoch()).count();
    load.signal(SIGUSR1);
    m.threads_max = threads_idle;
    // Threads are counted every 50th poll (about 50 ms): listing /proc/self/task costs the
    // worker's CPU, and with 10,000 baseline threads every millisecond it skewed CPU per GB.
    std::uint64_t polls = 0;
    const auto sample_threads = [&] {
        if (polls++ % 50 == 0) {
            m.threads_max = std::max(m.threads_max, process_thread_count());
        }
    };
    m.sent = wait_until(
        [&] {
            sample_threads();
            return load.out().find("bytes_sent") != std::string::npos;
        },
        std::chrono::seconds(600));
    m.load_rc = load.wait(std::chrono::seconds(10));
    m.report = load.out();
    m.bytes_sent = static_cast<std::uint64_t>(json_number(m.report, "bytes_sent"));
    m.delivered = m.sent && wait_until(
                                [&] {
                                    sample_threads();
                                    return w.out().bytes() >= m.bytes_sent &&
                                           w.out().end_of_stream() >= o.sources;
                                },
                                std::chrono::seconds(120));
    m.cpu = process_cpu_seconds() - cpu0;
    m.threads_max = std::max(m.threads_max, process_thread_count());
    m.flushes = w.flushes();
    m.seconds = static_cast<double>(w.out().last_data_ns() - go_ns) / 1e9;
    m.bytes = w.out().bytes();
    m.backpressure = w.backpressure_waits();
    return m;
}

/// What went wrong with the delivery, after the worker's shutdown; empty when nothing did.
std::vector<std::string> delivery_problems(const bench_options& o, bench_worker& w,
                                           const send_measure& m, std::uint64_t records_each,
                                           const sluice::test::child_process& load) {
    std::vector<std::string> problems = w.out().verify(o.sources, records_each, o.pad_bytes);
    if (m.load_rc != 0) {
        problems.push_back("loadgen exit " + std::to_string(m.load_rc) + ": " +
                           load.err().substr(0, 300));
    }
    if (m.sent && !m.delivered) {
        problems.push_back("only " + std::to_string(m.bytes) + " of " +
                           std::to_string(m.bytes_sent) + " bytes arrived");
    }
    if (!m.sent) {
        problems.push_back("the load generator had not finished sending after 600 s (" +
                           std::to_string(m.bytes) + " bytes delivered)");
    } else if (m.bytes != m.bytes_sent) {
        problems.push_back("bytes delivered " + std::to_string(m.bytes) + " != sent " +
                           std::to_string(m.bytes_sent));
    }
    const auto p = w.pool().stats();
    if (p.free != p.buffer_count) {
        problems.push_back("buffers leaked: " + std::to_string(p.buffer_count - p.free));
    }
    return problems;
}

boost::json::array json_strings(const std::vector<std::string>& items) {
    return boost::json::array(items.begin(), items.end());
}

int run_throughput(const bench_options& o) {
    boost::json::object json{{"measure", "ingest"},
                             {"mode", o.mode},
                             {"transport", o.transport},
                             {"sources", o.sources},
                             {"open_file_limit", raise_open_file_limit()}};

    // Phase 1: N idle TCP connections.
    bench_worker w(o, o.sources, bench_sink::use::verify);
    idle_measure before;
    before.rss_before_kib = rss_kib();
    before.heap_before = heap_in_use_bytes();
    before.threads_before = process_thread_count();
    const std::uint16_t port = w.listen(o.sources);
    if (port == 0) {
        return 1;
    }
    // ~ total_bytes of records over all connections ("<id>,<n>,<value>\n" ≈ 18–26 bytes, plus
    // the padding field if any).
    const std::uint64_t record_bytes = 22 + (o.pad_bytes == 0 ? 0 : o.pad_bytes + 1);
    const std::uint64_t records_each =
        std::max<std::uint64_t>(1, o.total_bytes / o.sources / record_bytes);
    std::vector<std::string> load_argv{o.loadgen,
                                       "--port",
                                       std::to_string(port),
                                       "--connections",
                                       std::to_string(o.sources),
                                       "--records",
                                       std::to_string(records_each),
                                       "--id-base",
                                       "0",
                                       "--pad-bytes",
                                       std::to_string(o.pad_bytes),
                                       "--chunk-bytes",
                                       std::to_string(o.chunk_bytes),
                                       "--hold"};
    if (o.http()) {
        load_argv.emplace_back("--http");
    }
    if (o.tls()) {
        load_argv.insert(load_argv.end(),
                         {"--tls", "--ca-file", sluice::test::certs().path("ca.pem")});
    }
    const auto load = start_loadgen(load_argv);
    const auto idle = accept_idle(o, w, *load, before);
    if (!idle) {
        return 1;
    }
    const auto per_source = [&](std::uint64_t after, std::uint64_t before_bytes) {
        return fixed(static_cast<double>(after > before_bytes ? after - before_bytes : 0) /
                         static_cast<double>(o.sources),
                     1);
    };
    json["accept_seconds"] = fixed(idle->accept_seconds, 6);
    json["threads_before"] = idle->threads_before;
    json["threads_idle"] = idle->threads_idle;
    json["rss_before_kib"] = idle->rss_before_kib;
    json["rss_idle_kib"] = idle->rss_idle_kib;
    json["rss_per_idle_source_bytes"] =
        per_source(idle->rss_idle_kib * 1024, idle->rss_before_kib * 1024);
    json["heap_per_idle_source_bytes"] = per_source(idle->heap_idle, idle->heap_before);

    // Phase 2: send everything; time until the last byte is in the pipeline.
    const send_measure sent = send_all(o, w, *load, idle->threads_idle);
    w.shutdown();
    std::vector<std::string> problems = delivery_problems(o, w, sent, records_each, *load);

    // Phase 3: start N idle generators in process (last: the other phases' threads and
    // memory do not matter to a time).
    const start_times started = start_idle_generators(o);
    if (!started.problem.empty()) {
        problems.push_back(started.problem);
    }

    const double gb = static_cast<double>(sent.bytes) / 1e9;
    json["start_seconds"] = fixed(started.total, 6);
    json["start_register_seconds"] = fixed(started.registering, 6);
    json["start_call_seconds"] = fixed(started.calling_start, 6);
    json["threads_max"] = sent.threads_max;
    json["bytes_sent"] = sent.bytes_sent;
    json["bytes_delivered"] = sent.bytes;
    json["records_each"] = records_each;
    json["pad_bytes"] = o.pad_bytes;
    json["ingest_seconds"] = fixed(sent.seconds, 6);
    json["gb_per_second"] = fixed(sent.seconds > 0 ? gb / sent.seconds : 0, 4);
    json["cpu_seconds"] = fixed(sent.cpu, 3);
    json["cpu_seconds_per_gb"] = fixed(gb > 0 ? sent.cpu / gb : 0, 3);
    json["loadgen_cpu_seconds"] = fixed(json_number(sent.report, "send_cpu_seconds"), 3);
    json["http_refused"] =
        static_cast<std::int64_t>(std::max(0.0, json_number(sent.report, "http_refused")));
    json["backpressure_waits"] = sent.backpressure;
    json["flushes"] = flushes_json(sent.flushes);
    json["verified"] = problems.empty();
    json["problems"] = json_strings(problems);
    std::cout << boost::json::serialize(json) << std::endl;
    return problems.empty() ? 0 : 1;
}

int run_latency(const bench_options& o) {
    bench_worker w(o, o.sources, bench_sink::use::latency);
    const std::uint16_t port = w.listen(o.sources);
    if (port == 0) {
        return 1;
    }
    const auto records = static_cast<std::uint64_t>(o.rate * o.latency_seconds);
    const auto started_load =
        start_loadgen({o.loadgen, "--port", std::to_string(port), "--connections",
                       std::to_string(o.sources), "--records", std::to_string(records), "--rate",
                       std::to_string(o.rate), "--latency", "--hold"});
    auto& load = *started_load;
    // Light load, not the connection storm: every connection is accepted and its source
    // running before the first record is sent (the load generator spreads the sends over
    // each period).
    const bool ready =
        wait_until([&] { return load.out().find("\"connected\"") != std::string::npos; },
                   std::chrono::seconds(120)) &&
        wait_until([&] { return w.running() >= o.sources; }, std::chrono::seconds(120));
    if (!ready) {
        std::cerr << "ingest-bench: only " << w.running() << " of " << o.sources
                  << " connections accepted\n";
        return 1;
    }
    const double cpu0 = process_cpu_seconds();
    load.signal(SIGUSR1);
    const int rc =
        load.wait(std::chrono::milliseconds(static_cast<long>(o.latency_seconds * 1000) + 60000));
    const bool delivered =
        wait_until([&] { return w.out().end_of_stream() >= o.sources; }, std::chrono::seconds(30));
    // The worker's CPU for the light load (and the 1 ms polls of this thread, the same for both
    // runners): what a wake costs at 20,000 records/s.
    const double cpu_seconds = process_cpu_seconds() - cpu0;
    const auto flushes = w.flushes();
    w.shutdown();
    const std::vector<std::int64_t> h = w.out().latencies();
    const std::uint64_t expected = records * o.sources;
    const bool ok = rc == 0 && delivered && h.size() == expected;
    const auto quantile = [&h](double q) {
        return h.empty() ? 0.0
                         : static_cast<double>(
                               h[static_cast<std::size_t>(q * static_cast<double>(h.size() - 1))]) /
                               1e6;
    };
    const boost::json::object report{{"measure", "latency"},
                                     {"mode", o.mode},
                                     {"demand_flush", o.demand},
                                     {"sources", o.sources},
                                     {"rate_per_source", o.rate},
                                     {"records", h.size()},
                                     {"records_expected", expected},
                                     {"p50_ms", fixed(quantile(0.50), 4)},
                                     {"p99_ms", fixed(quantile(0.99), 4)},
                                     {"max_ms", fixed(quantile(1.0), 4)},
                                     {"cpu_seconds", fixed(cpu_seconds, 3)},
                                     {"flushes", flushes_json(flushes)},
                                     {"verified", ok}};
    std::cout << boost::json::serialize(report) << std::endl;
    return ok ? 0 : 1;
}

/// The machine's memory-copy ceiling: 256 MiB copied between two warm arrays, best of 5.
int run_memcpy() {
    const std::size_t size = 256U << 20U;
    std::vector<char> from(size, 'x');
    std::vector<char> to(size, 'y');
    double best = 0;
    for (int round = 0; round < 5; ++round) {
        const auto t0 = clock_type::now();
        std::memcpy(to.data(), from.data(), size);
        const double s = std::chrono::duration<double>(clock_type::now() - t0).count();
        best = std::max(best, static_cast<double>(size) / s / 1e9);
        from[static_cast<std::size_t>(round)] = to[size - 1 - static_cast<std::size_t>(round)];
    }
    std::cout << boost::json::serialize(boost::json::object{
                     {"measure", "memcpy"}, {"bytes", size}, {"gb_per_second", fixed(best, 3)}})
              << std::endl;
    return 0;
}

} // namespace

int main(int argc, char** argv) {
    bench_options o;
    CLI::App app{"sluice-ingest-bench — ingestion throughput, start, memory and latency, one run"};
    app.add_option("--mode", o.mode, "sluice | thread_per_source")
        ->check(CLI::IsMember({"sluice", "thread_per_source"}));
    app.add_option("--sources", o.sources, "sources (TCP connections)")
        ->check(CLI::Range(1U, 100000U));
    app.add_option("--total-bytes", o.total_bytes,
                   "ingest: about this many bytes over all connections");
    app.add_option("--buffer-bytes", o.buffer_bytes, "pool buffer size");
    app.add_option("--baseline-buffers", o.baseline_buffers_per_source,
                   "thread_per_source: fixed buffers each");
    bool memcpy_ceiling = false;
    app.add_flag("--memcpy", memcpy_ceiling, "measure the memcpy bandwidth ceiling and exit");
    bool start_only = false;
    app.add_flag("--start-only", start_only,
                 "only time the start of N idle sources (for profiling)");
    app.add_flag("--latency", o.latency, "measure light-load latency instead of throughput");
    app.add_option("--rate", o.rate, "latency: records/s per connection");
    app.add_option("--seconds", o.latency_seconds, "latency: seconds of load");
    app.add_flag("!--no-demand", o.demand,
                 "latency: turn off sluice's demand flush (flush timeout only)");
    app.add_flag("!--no-park", o.park,
                 "sluice: idle sources wait inside their coroutines (no parking)");
    app.add_option("--loadgen", o.loadgen, "path of sluice-loadgen");
    app.add_option("--io-threads", o.io_threads, "I/O lanes (sluice)")->check(CLI::Range(1U, 64U));
    app.add_option("--compute-threads", o.compute_threads, "compute pool threads (both runners)")
        ->check(CLI::Range(1U, 64U));
    app.add_option("--chunk-bytes", o.chunk_bytes, "ingest: the load generator's bytes per write");
    app.add_option("--pad-bytes", o.pad_bytes,
                   "ingest: records carry a padding field this long (larger records)");
    app.add_flag("--check-records", o.check_records,
                 "ingest: check every record as it arrives (names the first wrong one; costs the "
                 "worker CPU) "
                 "instead of each origin's XXH3-64 hash after the run");
    app.add_flag("--corrupt-one-byte", o.corrupt_one_byte,
                 "ingest: self-test of the verification; one delivered byte is flipped before it "
                 "is checked, "
                 "and the run must fail");
    app.add_option("--transport", o.transport,
                   "ingest: tcp | http (POST bodies, keep-alive) | tls | https (sluice only)")
        ->check(CLI::IsMember({"tcp", "http", "tls", "https"}));
    CLI11_PARSE(app, argc, argv);
    if (o.transport != "tcp" && (o.mode != "sluice" || o.latency)) {
        std::cerr << "ingest-bench: --transport " << o.transport
                  << " measures sluice's throughput only: use --mode sluice without --latency\n";
        return 2;
    }
    if (o.pad_bytes != 0 &&
        o.pad_bytes + sluice::runtime::generator_record_bytes_max >= o.buffer_bytes) {
        std::cerr << "ingest-bench: --pad-bytes " << o.pad_bytes << " makes records longer than a "
                  << o.buffer_bytes
                  << "-byte buffer, which processing drops; use --pad-bytes below "
                  << o.buffer_bytes - sluice::runtime::generator_record_bytes_max
                  << " or a larger --buffer-bytes\n";
        return 2;
    }
    raise_open_file_limit();
    try {
        if (memcpy_ceiling) {
            return run_memcpy();
        }
        if (start_only) {
            const start_times t = start_idle_generators(o);
            std::cout << boost::json::serialize(boost::json::object{
                             {"measure", "start"},
                             {"mode", o.mode},
                             {"sources", o.sources},
                             {"start_seconds", fixed(t.total, 6)},
                             {"start_register_seconds", fixed(t.registering, 6)},
                             {"start_call_seconds", fixed(t.calling_start, 6)},
                             {"ok", t.problem.empty()}})
                      << std::endl;
            return t.problem.empty() ? 0 : 1;
        }
        return o.latency ? run_latency(o) : run_throughput(o);
    } catch (const std::exception& e) {
        std::cerr << "ingest-bench: " << e.what() << "\n";
        return 1;
    }
}
