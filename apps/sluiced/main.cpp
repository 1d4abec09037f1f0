/// sluiced: the sluice ingestion worker. Loads a TOML configuration (or the built-in default),
/// runs its sources on a fixed set of I/O threads with processing on oneTBB, prints a status
/// line every second, drains gracefully on SIGINT/SIGTERM or after --duration, and can write a
/// JSON summary at exit.
///
/// Exit codes: 0 drained with every buffer back; 1 a start-up failure; 2 a configuration
/// error; 3 drained, but a buffer did not come back; 4 a second signal ended a drain;
/// 5 the drain passed worker.drain_timeout_ms.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <prometheus/exposer.h>

#include "apps/baseline/baseline_runner.hpp"
#include "apps/sluiced/counting_sink.hpp"
#include "apps/sluiced/stop_signals.hpp"
#include "apps/sluiced/summary.hpp"
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
using namespace sluiced;

constexpr int exit_startup_failure = 1;
constexpr int exit_config_error = 2;
constexpr int exit_buffer_missing = 3;

struct command_line {
    std::string config_path;
    std::string check_path;
    std::string summary_path;
    bool print_default = false;
    double duration_s = 0.0;
    bool quiet = false;
};

/// The options, or the exit code when there is nothing to run (--help, a bad option).
std::optional<int> parse_command_line(int argc, char** argv, command_line& cl) {
    CLI::App app{"sluiced — the sluice ingestion worker"};
    app.add_option("--config", cl.config_path, "TOML configuration file (default: built-in demo)");
    app.add_option("--check-config", cl.check_path,
                   "validate a configuration file, print every error, exit");
    app.add_flag("--print-default-config", cl.print_default, "print the built-in configuration");
    app.add_option("--duration", cl.duration_s, "run for this many seconds, then drain and exit")
        ->check(CLI::NonNegativeNumber);
    app.add_option("--summary-json", cl.summary_path, "write a JSON summary here at exit");
    app.add_flag("--quiet", cl.quiet, "no status line");
    app.footer("Exit codes: 0 drained with every buffer back; 1 start-up failure; 2 configuration "
               "error; 3 a buffer did not come back; 4 a second signal ended the drain; 5 the "
               "drain passed worker.drain_timeout_ms.");
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    }
    return std::nullopt;
}

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        throw std::runtime_error("cannot read configuration file '" + path + "'");
    }
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

/// --check-config: every error, located; exit 0 or 2.
int check_config(const std::string& path) {
    const auto result = parse_worker_config(read_file(path), path);
    for (const auto& error : result.errors) {
        std::cerr << error.to_string() << "\n";
    }
    if (!result.ok()) {
        std::cerr << path << ": " << result.errors.size() << " error(s)\n";
        return exit_config_error;
    }
    std::cout << path << ": ok\n";
    return 0;
}

/// The Prometheus endpoint: every scrape reads snapshots; nothing on the data path.
class metrics_endpoint {
public:
    /// False (said on stderr) when the address cannot be bound.
    bool open(const worker_config& cfg, sluice::worker& core) {
        if (!cfg.metrics.enabled) {
            return true;
        }
        auto& env = core.environment();
        collector_ = std::make_shared<metrics_collector>(
            core.pool(), core.server(), core.pipeline(),
            thread_pools{cfg.threads.io_threads, cfg.threads.compute_threads,
                         cfg.threads.blocking_threads, [&env] { return env.io_load(); },
                         [&env] { return env.blocking_load(); }},
            sluice::version_string);
        const std::string bind = cfg.metrics.address + ":" + std::to_string(cfg.metrics.port);
        try {
            exposer_ = std::make_unique<prometheus::Exposer>(bind, 1);
        } catch (const std::exception& e) {
            std::cerr << "sluiced: metrics endpoint " << bind << ": " << e.what()
                      << "; change [metrics] port or address, or set enabled = false\n";
            return false;
        }
        exposer_->RegisterCollectable(collector_);
        std::cerr << "sluiced: metrics on http://" << cfg.metrics.address << ":"
                  << exposer_->GetListeningPorts().front() << "/metrics\n";
        return true;
    }
    /// Before the drain: a scrape then would read a worker that is going away.
    void close() {
        if (exposer_) {
            exposer_->RemoveCollectable(collector_);
        }
    }

private:
    std::unique_ptr<prometheus::Exposer> exposer_;
    std::shared_ptr<metrics_collector> collector_;
};

source_server::source_factory factory_for(const source_spec& spec, generator_options generator) {
    return [&spec, generator](environment& e, const executor& lane) -> std::unique_ptr<source> {
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
    };
}

struct start_counts {
    std::size_t started = 0;
    std::size_t refused = 0; ///< said on stderr, each with the admission's reason
};

/// Registers every configured source (each `count` times) and starts them all at once (one
/// post per lane), or hands them to the thread-per-source baseline.
start_counts start_sources(const worker_config& cfg, source_server& server,
                           baseline_runner& baseline) {
    start_counts counts;
    std::vector<source_handle> admitted;
    for (const auto& spec : cfg.sources) {
        for (std::uint32_t i = 0; i < spec.count; ++i) {
            source_options options;
            options.name = spec.count == 1 ? spec.name : spec.name + "#" + std::to_string(i);
            options.limits = spec.limits;
            options.flush_timeout = spec.flush_timeout;
            auto generator = spec.generator;
            generator.id += i;
            const auto answer = cfg.mode == runner_mode::thread_per_source
                                    ? baseline.add(options, spec, generator)
                                    : server.register_source(options, factory_for(spec, generator));
            if (!answer.admitted()) {
                std::cerr << "sluiced: " << answer.message << "\n";
                ++counts.refused;
            } else if (cfg.mode == runner_mode::sluice) {
                admitted.push_back(answer.handle);
            }
        }
    }
    counts.started = server.start(admitted);
    return counts;
}

/// Opens every configured listener; false (said on stderr) when one cannot be bound.
bool open_listeners(const worker_config& cfg, source_server& server, baseline_runner& baseline) {
    for (const auto& l : cfg.listeners) {
        const bool baseline_mode = cfg.mode == runner_mode::thread_per_source;
        const auto [error, port] =
            baseline_mode ? baseline.add_tcp_listener(l) : server.add_tcp_listener(l);
        if (error) {
            std::cerr << "sluiced: listener '" << l.name << "' on " << l.address << ":" << l.port
                      << ": " << error.message() << "; change its port or address\n";
            return false;
        }
        std::cerr << "sluiced: listener '" << l.name << "'"
                  << (baseline_mode ? " (thread per connection)" : "") << " on " << l.address << ":"
                  << port << "\n";
    }
    return true;
}

/// The main thread's wait for a signal or the duration: samples the thread count every 100 ms
/// and prints the status line every status_interval. (The real clock here is the worker's own,
/// outside the runtime.)
class control_loop {
public:
    control_loop(const worker_config& cfg, const command_line& cl, sluice::worker& core,
                 const baseline_runner& baseline, const counting_sink& out)
        : cfg_(cfg), cl_(cl), core_(core), baseline_(baseline), out_(out) {}

    /// Seconds it ran; `threads_max` is raised to the most threads seen.
    double run(std::size_t& threads_max) {
        threads_max_ = &threads_max;
        started_ = std::chrono::steady_clock::now();
        last_ = started_;
        next_status_ = started_ + cfg_.status_interval;
        arm();
        control_.run();
        tick_.cancel();
        return std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
    }

private:
    void arm() {
        tick_.expires_after(std::chrono::milliseconds(100));
        tick_.async_wait([this](const boost::system::error_code& error) {
            if (!error && !tick()) {
                control_.stop();
            } else if (!error) {
                arm();
            }
        });
    }
    /// False when the run is over.
    bool tick() {
        *threads_max_ = std::max(*threads_max_, process_thread_count());
        if (stop_signals.load() > 0) {
            std::cerr << "\nsluiced: signal " << first_signal.load() << ": draining\n";
            return false;
        }
        const auto now = std::chrono::steady_clock::now();
        if (cl_.duration_s > 0 && now - started_ >= std::chrono::duration<double>(cl_.duration_s)) {
            return false;
        }
        if (!cl_.quiet && cfg_.status_interval.count() > 0 && now >= next_status_) {
            next_status_ += cfg_.status_interval;
            print_status(now);
        }
        return true;
    }
    void print_status(std::chrono::steady_clock::time_point now) {
        const double dt = std::chrono::duration<double>(now - last_).count();
        const auto s = core_.server().stats();
        const auto p = core_.pool().stats();
        const std::uint64_t bytes = out_.bytes();
        const std::uint64_t records = out_.records();
        std::fprintf(stderr,
                     "sluiced: running %u stopped %u failed %u | %.1f MB/s %.0f "
                     "records/s | pool free %u/%u waiters %u | threads %zu | "
                     "source errors %llu\n",
                     s.sources_by_state[1] + baseline_.running_count(), s.sources_by_state[3],
                     s.sources_by_state[4], static_cast<double>(bytes - last_bytes_) / dt / 1e6,
                     static_cast<double>(records - last_records_) / dt, p.free, p.buffer_count,
                     p.waiters_sources + p.waiters_processing, process_thread_count(),
                     static_cast<unsigned long long>(out_.errors()));
        last_ = now;
        last_bytes_ = bytes;
        last_records_ = records;
    }

    const worker_config& cfg_;
    const command_line& cl_;
    sluice::worker& core_;
    const baseline_runner& baseline_;
    const counting_sink& out_;
    asio::io_context control_{1};
    asio::steady_timer tick_{control_};
    std::size_t* threads_max_ = nullptr;
    std::chrono::steady_clock::time_point started_{};
    std::chrono::steady_clock::time_point last_{};
    std::chrono::steady_clock::time_point next_status_{};
    std::uint64_t last_bytes_ = 0;
    std::uint64_t last_records_ = 0;
};

/// Runs the worker on a valid configuration until a signal or the duration, drains it, and
/// writes the summary.
int run_worker(const worker_config& cfg, const std::string& config_name, command_line& cl) {
    if (cl.summary_path.empty()) {
        cl.summary_path = cfg.summary_json_path;
    }
    raise_open_file_limit();
    mask_stop_signals(SIG_BLOCK); // until every thread of the worker and endpoint exists
    std::size_t threads_max = process_thread_count();
    // The sink outlives the worker, and the baseline (which feeds the worker's pool and
    // processing) is declared after it, so it is destroyed first.
    counting_sink out{std::chrono::microseconds(cfg.sink_cost_us_per_buffer)};
    sluice::worker core(out, {cfg.pool, cfg.threads, cfg.processing, cfg.server});
    baseline_runner baseline(core.pool(), core.pipeline(), cfg.baseline_buffers_per_source);
    metrics_endpoint metrics;
    if (!metrics.open(cfg, core)) {
        return exit_config_error;
    }
    mask_stop_signals(SIG_UNBLOCK);

    const start_counts counts = start_sources(cfg, core.server(), baseline);
    if (!open_listeners(cfg, core.server(), baseline)) {
        return exit_config_error;
    }
    if (cfg.mode == runner_mode::thread_per_source) {
        mask_stop_signals(SIG_BLOCK); // its threads inherit the mask
        baseline.start_all();
        mask_stop_signals(SIG_UNBLOCK);
    }
    threads_max = std::max(threads_max, process_thread_count());
    std::cerr << "sluiced: " << (cfg.mode == runner_mode::sluice ? "sluice" : "thread_per_source")
              << " mode, " << cfg.threads.io_threads << " io + " << cfg.threads.compute_threads
              << " compute threads, " << cfg.pool.buffer_count << " x "
              << cfg.pool.buffer_size_bytes << " B buffers, "
              << (cfg.mode == runner_mode::sluice ? counts.started : baseline.source_count())
              << " sources started, " << counts.refused << " refused\n";

    const double ran_s = control_loop(cfg, cl, core, baseline, out).run(threads_max);
    threads_max = std::max(threads_max, process_thread_count());

    // Graceful drain: stop sources (partial buffers flushed), join every coroutine, let
    // processing finish, unregister everything.
    metrics.close();
    {
        drain_deadline deadline(cfg.drain_timeout);
        baseline.shutdown();
        core.shutdown();
    }
    out.flush_suppressed();
    const auto p = core.pool().stats();
    std::cerr << "sluiced: drained after " << ran_s << " s: " << out.bytes() << " bytes, "
              << out.records() << " records delivered; pool free " << p.free << "/"
              << p.buffer_count << "\n";
    if (!cl.summary_path.empty()) {
        write_summary(cl.summary_path, cfg,
                      {config_name, ran_s, counts.refused, threads_max, out.bytes(), out.records(),
                       out.end_of_stream(), out.errors(), core.server().stats(), baseline.stats(),
                       p, core.pipeline().stats()});
    }
    return p.free == p.buffer_count ? 0 : exit_buffer_missing;
}

} // namespace

int main(int argc, char** argv) {
    command_line cl;
    if (const auto code = parse_command_line(argc, argv, cl)) {
        return *code;
    }
    install_stop_signals();
    try {
        if (cl.print_default) {
            std::cout << default_worker_config();
            return 0;
        }
        if (!cl.check_path.empty()) {
            return check_config(cl.check_path);
        }
        const std::string name = cl.config_path.empty() ? "<built-in default>" : cl.config_path;
        const auto parsed =
            parse_worker_config(cl.config_path.empty() ? std::string(default_worker_config())
                                                       : read_file(cl.config_path),
                                name);
        if (!parsed.ok()) {
            for (const auto& error : parsed.errors) {
                std::cerr << error.to_string() << "\n";
            }
            std::cerr << "sluiced: not started: " << parsed.errors.size()
                      << " configuration error(s)\n";
            return exit_config_error;
        }
        return run_worker(parsed.config, name, cl);
    } catch (const std::exception& e) {
        std::cerr << "sluiced: " << e.what() << "\n";
        return exit_startup_failure;
    }
}
