/// sluiced: the sluice ingestion worker. Loads a TOML configuration (or the built-in default),
/// runs its sources on a fixed set of I/O threads with processing on oneTBB, prints a status
/// line every second, drains gracefully on SIGINT/SIGTERM or after --duration, and can write a
/// JSON summary at exit.
///
/// Exit codes: 0 drained with every buffer back; 1 a start-up failure; 2 a configuration
/// error; 3 drained, but a buffer did not come back; 4 a second signal ended a drain;
/// 5 the drain passed worker.drain_timeout_ms.

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <prometheus/exposer.h>

#include "apps/baseline/baseline_runner.hpp"
#include "apps/sluiced/worker_config.hpp"
#include "sluice/env/process_threads.hpp"
#include "sluice/metrics/metrics.hpp"
#include "sluice/mqtt/mqtt_source.hpp"
#include "sluice/source/blocking_source.hpp"
#include "sluice/source/generator_source.hpp"
#include "sluice/source/stream_sources.hpp"
#include "sluice/version.hpp"
#include "sluice/worker.hpp"

namespace {

namespace asio = boost::asio;
using namespace sluice::runtime;

constexpr int exit_second_signal = 4;
constexpr int exit_drain_timeout = 5;

/// SIGINT/SIGTERM: the first asks for a drain (the control loop polls this), a second one
/// ends the process at once. Installed before anything starts, so a signal during start-up
/// drains too.
std::atomic<int> stop_signals{0};
std::atomic<int> first_signal{0};

void on_stop_signal(int number) {
    if (stop_signals.fetch_add(1) == 0) {
        first_signal.store(number);
        return;
    }
    // Async-signal-safe: write(2) and _exit(2) only.
    constexpr char message[] = "\nsluiced: second signal: exiting now, without draining\n";
    [[maybe_unused]] const auto written = ::write(STDERR_FILENO, message, sizeof message - 1);
    ::_exit(exit_second_signal);
}

/// Blocks or unblocks SIGINT and SIGTERM in the calling thread; threads inherit the mask of the
/// thread that creates them. main blocks them while the worker and the metrics endpoint start
/// their threads and unblocks them in itself afterwards, so only the main thread ever takes a
/// stop signal. A signal sent meanwhile stays pending and is taken at the unblock. (A signal
/// taken by a thread sitting in a raw futex wait, as oneTBB's idle workers do, is run late
/// under ThreadSanitizer, which defers handlers to the thread's next intercepted call.)
void mask_stop_signals(int how) {
    sigset_t stops;
    sigemptyset(&stops);
    sigaddset(&stops, SIGINT);
    sigaddset(&stops, SIGTERM);
    ::pthread_sigmask(how, &stops, nullptr);
}

void install_stop_signals() {
    struct sigaction action {};
    action.sa_handler = on_stop_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;
    ::sigaction(SIGINT, &action, nullptr);
    ::sigaction(SIGTERM, &action, nullptr);
}

/// Ends the process with exit_drain_timeout unless `done()` is called within `deadline`: a
/// drain that hangs (a source stuck in a system call) cannot keep the worker up forever.
class drain_deadline {
public:
    explicit drain_deadline(duration deadline)
        : watchdog_([this, deadline] {
              std::unique_lock lock(mutex_);
              if (!finished_.wait_for(lock, deadline, [this] { return done_; })) {
                  std::fprintf(
                      stderr,
                      "sluiced: the drain did not finish within worker.drain_timeout_ms "
                      "= %lld; exiting without it\n",
                      static_cast<long long>(
                          std::chrono::duration_cast<std::chrono::milliseconds>(deadline).count()));
                  std::fflush(stderr);
                  ::_exit(exit_drain_timeout);
              }
          }) {}
    drain_deadline(const drain_deadline&) = delete;
    drain_deadline& operator=(const drain_deadline&) = delete;
    ~drain_deadline() { done(); }
    void done() {
        {
            const std::lock_guard lock(mutex_);
            done_ = true;
        }
        finished_.notify_all();
        if (watchdog_.joinable()) {
            watchdog_.join();
        }
    }

private:
    std::mutex mutex_;
    std::condition_variable finished_;
    bool done_ = false;
    std::thread watchdog_; ///< last: starts once the rest is constructed
};

/// Counts what reaches the engine; reports errors on stderr, at most `lines_per_second` a
/// second (a storm of resets must not flood the log): the next line that is printed says how
/// many were left out.
class counting_sink final : public sink {
public:
    static constexpr int lines_per_second = 10;

    explicit counting_sink(std::chrono::microseconds cost_per_buffer) : cost_(cost_per_buffer) {}

    void on_data(const data_event& event) override {
        if (cost_.count() > 0) {
            std::this_thread::sleep_for(cost_); // worker.sink_cost_us_per_buffer: the engine's work
        }
        bytes_.fetch_add(event.raw.size(), std::memory_order_relaxed);
        records_.fetch_add(event.record_count, std::memory_order_relaxed);
        fields_.fetch_add(event.field_count, std::memory_order_relaxed);
    }
    void on_end_of_stream(std::uint64_t /*origin_id*/) override {
        end_of_stream_.fetch_add(1, std::memory_order_relaxed);
    }
    void on_error(std::uint64_t origin_id, std::string_view message) override {
        errors_.fetch_add(1, std::memory_order_relaxed);
        const std::lock_guard lock(print_mutex_);
        const auto now = std::chrono::steady_clock::now();
        if (now - window_start_ >= std::chrono::seconds(1)) {
            window_start_ = now;
            printed_in_window_ = 0;
        }
        if (printed_in_window_ >= lines_per_second) {
            ++suppressed_;
            return;
        }
        ++printed_in_window_;
        std::cerr << "sluiced: source " << origin_id << " failed: " << message;
        if (suppressed_ > 0) {
            std::cerr << " (" << suppressed_ << " more source failures not shown)";
            suppressed_ = 0;
        }
        std::cerr << "\n";
    }
    /// Says how many failures were left out since the last line (at the drain).
    void flush_suppressed() {
        const std::lock_guard lock(print_mutex_);
        if (suppressed_ > 0) {
            std::cerr << "sluiced: " << suppressed_ << " more source failures not shown\n";
            suppressed_ = 0;
        }
    }
    std::uint64_t bytes() const { return bytes_.load(std::memory_order_relaxed); }
    std::uint64_t records() const { return records_.load(std::memory_order_relaxed); }
    std::uint64_t errors() const { return errors_.load(std::memory_order_relaxed); }
    std::uint64_t end_of_stream() const { return end_of_stream_.load(std::memory_order_relaxed); }

private:
    std::atomic<std::uint64_t> bytes_{0};
    std::atomic<std::uint64_t> records_{0};
    std::atomic<std::uint64_t> fields_{0};
    std::atomic<std::uint64_t> errors_{0};
    std::atomic<std::uint64_t> end_of_stream_{0};
    std::mutex print_mutex_;
    std::chrono::steady_clock::time_point window_start_{}; ///< under print_mutex_
    int printed_in_window_ = 0;                            ///< under print_mutex_
    std::uint64_t suppressed_ = 0;                         ///< under print_mutex_
    std::chrono::microseconds cost_;                       ///< per buffer
};

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        throw std::runtime_error("cannot read configuration file '" + path + "'");
    }
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

std::string json_escape(std::string_view s) {
    std::string out;
    for (const char ch : s) {
        if (ch == '"' || ch == '\\') {
            out += '\\';
        }
        out += ch;
    }
    return out;
}

} // namespace

int main(int argc, char** argv) {
    CLI::App app{"sluiced — the sluice ingestion worker"};
    std::string config_path;
    std::string check_path;
    std::string summary_path;
    bool print_default = false;
    double duration_s = 0.0;
    bool quiet = false;
    app.add_option("--config", config_path, "TOML configuration file (default: built-in demo)");
    app.add_option("--check-config", check_path,
                   "validate a configuration file, print every error, exit");
    app.add_flag("--print-default-config", print_default, "print the built-in configuration");
    app.add_option("--duration", duration_s, "run for this many seconds, then drain and exit")
        ->check(CLI::NonNegativeNumber);
    app.add_option("--summary-json", summary_path, "write a JSON summary here at exit");
    app.add_flag("--quiet", quiet, "no status line");
    app.footer("Exit codes: 0 drained with every buffer back; 1 start-up failure; 2 configuration "
               "error; 3 a buffer did not come back; 4 a second signal ended the drain; 5 the "
               "drain passed worker.drain_timeout_ms.");
    CLI11_PARSE(app, argc, argv);
    install_stop_signals();

    try {
        if (print_default) {
            std::cout << default_worker_config();
            return 0;
        }
        if (!check_path.empty()) {
            const auto result = parse_worker_config(read_file(check_path), check_path);
            for (const auto& error : result.errors) {
                std::cerr << error.to_string() << "\n";
            }
            if (!result.ok()) {
                std::cerr << check_path << ": " << result.errors.size() << " error(s)\n";
                return 2;
            }
            std::cout << check_path << ": ok\n";
            return 0;
        }
        const std::string name = config_path.empty() ? "<built-in default>" : config_path;
        const auto parsed = parse_worker_config(
            config_path.empty() ? std::string(default_worker_config()) : read_file(config_path),
            name);
        if (!parsed.ok()) {
            for (const auto& error : parsed.errors) {
                std::cerr << error.to_string() << "\n";
            }
            std::cerr << "sluiced: not started: " << parsed.errors.size()
                      << " configuration error(s)\n";
            return 2;
        }
        const worker_config& cfg = parsed.config;
        if (summary_path.empty()) {
            summary_path = cfg.summary_json_path;
        }
        raise_open_file_limit();
        mask_stop_signals(SIG_BLOCK); // until every thread of the worker and endpoint exists

        std::size_t threads_max = process_thread_count();
        // The sink outlives the worker, and the baseline (which feeds the worker's pool and
        // processing) is declared after it, so it is destroyed first.
        counting_sink out{std::chrono::microseconds(cfg.sink_cost_us_per_buffer)};
        sluice::worker core(out, {cfg.pool, cfg.threads, cfg.processing, cfg.server});
        buffer_pool& pool = core.pool();
        production_environment& env = core.environment();
        processing& pipeline = core.pipeline();
        source_server& server = core.server();
        baseline_runner baseline(pool, pipeline, cfg.baseline_buffers_per_source);

        // Metrics: every scrape reads snapshots; nothing on the data path.
        std::unique_ptr<prometheus::Exposer> exposer;
        auto collector = std::make_shared<metrics_collector>(
            pool, server, pipeline,
            thread_pools{cfg.threads.io_threads, cfg.threads.compute_threads,
                         cfg.threads.blocking_threads, [&env] { return env.io_load(); },
                         [&env] { return env.blocking_load(); }},
            sluice::version_string);
        if (cfg.metrics.enabled) {
            const std::string bind = cfg.metrics.address + ":" + std::to_string(cfg.metrics.port);
            try {
                exposer = std::make_unique<prometheus::Exposer>(bind, 1);
            } catch (const std::exception& e) {
                std::cerr << "sluiced: metrics endpoint " << bind << ": " << e.what()
                          << "; change [metrics] port or address, or set enabled = false\n";
                return 2;
            }
            exposer->RegisterCollectable(collector);
            std::cerr << "sluiced: metrics on http://" << cfg.metrics.address << ":"
                      << exposer->GetListeningPorts().front() << "/metrics\n";
        }

        mask_stop_signals(SIG_UNBLOCK);

        std::size_t sources_started = 0;
        std::size_t refused = 0;
        std::vector<source_handle> admitted;
        for (const auto& spec : cfg.sources) {
            for (std::uint32_t i = 0; i < spec.count; ++i) {
                source_options options;
                options.name = spec.count == 1 ? spec.name : spec.name + "#" + std::to_string(i);
                options.limits = spec.limits;
                options.flush_timeout = spec.flush_timeout;
                auto generator = spec.generator;
                generator.id += i;
                if (cfg.mode == runner_mode::thread_per_source) {
                    const auto answer = baseline.add(options, spec, generator);
                    if (!answer.admitted()) {
                        std::cerr << "sluiced: " << answer.message << "\n";
                        ++refused;
                    }
                    continue;
                }
                const auto answer = server.register_source(
                    options,
                    [&spec, generator](environment& e,
                                       const executor& lane) -> std::unique_ptr<source> {
                        switch (spec.kind) {
                        case source_kind::generator:
                            return std::make_unique<generator_source>(e, lane, generator);
                        case source_kind::tcp_client:
                            return std::make_unique<tcp_client_source>(e, lane, spec.tcp_client);
                        case source_kind::udp:
                            return std::make_unique<udp_source>(e, lane, spec.udp);
                        case source_kind::file:
                            return std::make_unique<file_source>(e, lane, spec.path);
                        case source_kind::mqtt:
                            return std::make_unique<mqtt_source>(e, lane, spec.mqtt);
                        default:
                            return nullptr;
                        }
                    });
                if (!answer.admitted()) {
                    std::cerr << "sluiced: " << answer.message << "\n";
                    ++refused;
                    continue;
                }
                admitted.push_back(answer.handle);
            }
        }
        sources_started += server.start(admitted); // all at once: one post per lane
        for (const auto& l : cfg.listeners) {
            if (cfg.mode == runner_mode::thread_per_source) {
                const auto [error, port] = baseline.add_tcp_listener(l);
                if (error) {
                    std::cerr << "sluiced: listener '" << l.name << "' on " << l.address << ":"
                              << l.port << ": " << error.message() << "\n";
                    return 2;
                }
                std::cerr << "sluiced: listener '" << l.name << "' (thread per connection) on "
                          << l.address << ":" << port << "\n";
                continue;
            }
            const auto [error, port] = server.add_tcp_listener(l);
            if (error) {
                std::cerr << "sluiced: listener '" << l.name << "' on " << l.address << ":"
                          << l.port << ": " << error.message() << "; change its port or address\n";
                return 2;
            }
            std::cerr << "sluiced: listener '" << l.name << "' on " << l.address << ":" << port
                      << "\n";
        }
        if (cfg.mode == runner_mode::thread_per_source) {
            mask_stop_signals(SIG_BLOCK); // its threads inherit the mask
            baseline.start_all();
            mask_stop_signals(SIG_UNBLOCK);
        }
        threads_max = std::max(threads_max, process_thread_count());
        std::cerr << "sluiced: "
                  << (cfg.mode == runner_mode::sluice ? "sluice" : "thread_per_source") << " mode, "
                  << cfg.threads.io_threads << " io + " << cfg.threads.compute_threads
                  << " compute threads, " << cfg.pool.buffer_count << " x "
                  << cfg.pool.buffer_size_bytes << " B buffers, "
                  << (cfg.mode == runner_mode::sluice ? sources_started : baseline.source_count())
                  << " sources started, " << refused << " refused\n";

        // The main thread waits for a signal or the duration, printing status and sampling
        // the thread count. (The real clock here is the worker's own, outside the runtime.)
        asio::io_context control(1);
        const auto started = std::chrono::steady_clock::now();
        auto last = started;
        std::uint64_t last_bytes = 0;
        std::uint64_t last_records = 0;
        asio::steady_timer tick(control);
        const auto sample_every = std::chrono::milliseconds(100);
        auto next_status = started + cfg.status_interval;
        std::function<void()> arm = [&] {
            tick.expires_after(sample_every);
            tick.async_wait([&](const boost::system::error_code& error) {
                if (error) {
                    return;
                }
                threads_max = std::max(threads_max, process_thread_count());
                if (stop_signals.load() > 0) {
                    std::cerr << "\nsluiced: signal " << first_signal.load() << ": draining\n";
                    control.stop();
                    return;
                }
                const auto now = std::chrono::steady_clock::now();
                if (duration_s > 0 && now - started >= std::chrono::duration<double>(duration_s)) {
                    control.stop();
                    return;
                }
                if (!quiet && cfg.status_interval.count() > 0 && now >= next_status) {
                    next_status += cfg.status_interval;
                    const double dt = std::chrono::duration<double>(now - last).count();
                    const auto s = server.stats();
                    const auto p = pool.stats();
                    const std::uint64_t bytes = out.bytes();
                    const std::uint64_t records = out.records();
                    std::fprintf(
                        stderr,
                        "sluiced: running %u stopped %u failed %u | %.1f MB/s %.0f "
                        "records/s | pool free %u/%u waiters %u | threads %zu | "
                        "source errors %llu\n",
                        s.sources_by_state[1] + baseline.running_count(), s.sources_by_state[3],
                        s.sources_by_state[4], static_cast<double>(bytes - last_bytes) / dt / 1e6,
                        static_cast<double>(records - last_records) / dt, p.free, p.buffer_count,
                        p.waiters_sources + p.waiters_processing, process_thread_count(),
                        static_cast<unsigned long long>(out.errors()));
                    last = now;
                    last_bytes = bytes;
                    last_records = records;
                }
                arm();
            });
        };
        arm();
        control.run();
        tick.cancel();
        const double ran_s =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
        threads_max = std::max(threads_max, process_thread_count());

        // Graceful drain: stop sources (partial buffers flushed), join every coroutine, let
        // processing finish, unregister everything.
        if (exposer) {
            exposer->RemoveCollectable(collector);
        }
        {
            drain_deadline deadline(cfg.drain_timeout);
            baseline.shutdown();
            core.shutdown();
        }
        out.flush_suppressed();
        const auto s = server.stats();
        const auto b = baseline.stats();
        const auto p = pool.stats();
        std::cerr << "sluiced: drained after " << ran_s << " s: " << out.bytes() << " bytes, "
                  << out.records() << " records delivered; pool free " << p.free << "/"
                  << p.buffer_count << "\n";

        if (!summary_path.empty()) {
            std::ofstream json(summary_path);
            json << "{\n";
            json << "  \"mode\": \""
                 << (cfg.mode == runner_mode::sluice ? "sluice" : "thread_per_source") << "\",\n";
            json << "  \"config\": \"" << json_escape(name) << "\",\n";
            json << "  \"duration_seconds\": " << ran_s << ",\n";
            json << "  \"sources\": "
                 << (cfg.mode == runner_mode::sluice ? s.registrations_admitted_total
                                                     : b.sources_total)
                 << ",\n";
            json << "  \"sources_refused\": " << refused + s.registrations_refused_total << ",\n";
            json << "  \"bytes_delivered\": " << out.bytes() << ",\n";
            json << "  \"records_delivered\": " << out.records() << ",\n";
            json << "  \"end_of_stream\": " << out.end_of_stream() << ",\n";
            json << "  \"errors\": " << out.errors() << ",\n";
            const auto q = pipeline.stats();
            json << "  \"records_truncated\": " << q.records_truncated_total << ",\n";
            json << "  \"records_dropped\": " << q.records_dropped_total << ",\n";
            json << "  \"sink_failures\": " << q.sink_failures_total << ",\n";
            json << "  \"bytes_discarded\": " << q.bytes_discarded_total << ",\n";
            json << "  \"bytes_dropped\": " << s.bytes_dropped_total << ",\n";
            json << "  \"buffers_total\": " << p.buffer_count << ",\n";
            json << "  \"buffers_free_at_exit\": " << p.free << ",\n";
            json << "  \"threads_max\": " << threads_max << ",\n";
            json << "  \"io_threads\": " << cfg.threads.io_threads << ",\n";
            json << "  \"compute_threads\": " << cfg.threads.compute_threads << ",\n";
            json << "  \"blocking_threads\": " << cfg.threads.blocking_threads << ",\n";
            json << "  \"backpressure_waits\": " << s.backpressure_waits_total << ",\n";
            json << "  \"connections_accepted\": "
                 << s.connections_accepted_total + b.connections_total << ",\n";
            json << "  \"connections_refused\": " << s.connections_refused_total << ",\n";
            json << "  \"flushes\": {";
            for (std::size_t i = 0; i < flush_reason_count; ++i) {
                json << (i == 0 ? "" : ", ") << "\"" << to_string(static_cast<flush_reason>(i))
                     << "\": " << s.flushes_total[i] + b.flushes_total[i];
            }
            json << "},\n";
            json << "  \"errors_by_kind\": {";
            for (std::size_t i = 0; i < source_kinds_defined(); ++i) {
                json << (i == 0 ? "" : ", ") << "\"" << to_string(static_cast<source_kind>(i))
                     << "\": " << s.errors_total[i];
            }
            json << "}\n}\n";
        }
        return p.free == p.buffer_count ? 0 : 3;
    } catch (const std::exception& e) {
        std::cerr << "sluiced: " << e.what() << "\n";
        return 1;
    }
}
