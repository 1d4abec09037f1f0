/// sluiced: the sluice ingestion worker. Loads a TOML configuration (--config, else
/// /etc/sluice/sluiced.toml, else the built-in demo), runs its sources on a fixed set of I/O
/// threads with processing on oneTBB, serves /metrics, /healthz and /ready, logs one line per
/// event (text or JSON) with a status line when stderr is a terminal, tells systemd when it is
/// ready and when it stops, drains gracefully on SIGINT/SIGTERM or after --duration, and can
/// write a JSON summary at exit.
///
/// Exit codes: 0 drained with every buffer back; 1 a start-up failure; 2 a configuration
/// error; 3 drained, but a buffer did not come back; 4 a second signal ended a drain;
/// 5 the drain passed worker.drain_timeout_ms.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <CLI/CLI.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <unistd.h>

#include "apps/baseline/baseline_runner.hpp"
#include "apps/sluiced/counting_sink.hpp"
#include "apps/sluiced/http_endpoint.hpp"
#include "apps/sluiced/log.hpp"
#include "apps/sluiced/reload.hpp"
#include "apps/sluiced/service.hpp"
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

/// Where sluiced looks for its configuration when --config is not given.
constexpr const char* default_config_path = "/etc/sluice/sluiced.toml";
/// The name the built-in configuration goes by in errors and the log.
constexpr const char* builtin_config_name = "<built-in default>";

struct command_line {
    std::string config_path;
    std::string check_path;
    std::string summary_path;
    std::string records_path; ///< --records-file
    std::string log_level;    ///< empty: the configuration's
    std::string log_format;   ///< empty: the configuration's
    bool print_default = false;
    bool version = false;
    double duration_s = 0.0;
    bool quiet = false;  ///< no status line
    bool status = false; ///< a status line even when stderr is not a terminal
};

/// The options, or the exit code when there is nothing to run (--help, a bad option).
std::optional<int> parse_command_line(int argc, char** argv, command_line& cl) {
    CLI::App app{"sluiced — the sluice ingestion worker"};
    app.add_option("--config", cl.config_path,
                   std::string("TOML configuration file (default: ") + default_config_path +
                       " if it exists, else the built-in demo)");
    app.add_option("--check-config", cl.check_path,
                   "validate a configuration file, print every error, exit");
    app.add_flag("--print-default-config", cl.print_default, "print the built-in configuration");
    app.add_option("--duration", cl.duration_s, "run for this many seconds, then drain and exit")
        ->check(CLI::NonNegativeNumber);
    app.add_option("--summary-json", cl.summary_path, "write a JSON summary here at exit");
    app.add_option("--records-file", cl.records_path,
                   "append every delivered record to this file (one write per buffer)");
    app.add_flag("--quiet", cl.quiet, "no status line");
    app.add_flag("--status", cl.status,
                 "a status line every worker.status_interval_ms even when stderr is not a "
                 "terminal (by default only on a terminal)");
    app.add_option("--log-level", cl.log_level, "error, warning, info or debug (default: [log])")
        ->check(CLI::IsMember({"error", "warning", "info", "debug"}));
    app.add_option("--log-format", cl.log_format, "text or json (default: [log])")
        ->check(CLI::IsMember({"text", "json"}));
    app.add_flag("--version", cl.version, "print the version and exit");
    app.footer("Signals: SIGINT or SIGTERM drain and exit (a second one exits at once).\n\n"
               "Exit codes:\n"
               "  0  drained with every buffer back\n"
               "  1  a start-up failure\n"
               "  2  a configuration error (or the endpoint's or a listener's address is taken)\n"
               "  3  drained, but a buffer did not come back\n"
               "  4  a second signal ended the drain\n"
               "  5  the drain passed worker.drain_timeout_ms");
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    }
    return std::nullopt;
}

/// --check-config: every error, located; exit 0 or 2.
int check_config(const std::string& path) {
    const auto result = parse_worker_config(read_config_file(path), path);
    for (const auto& error : result.errors) {
        std::cerr << error.to_string() << "\n";
    }
    for (const auto& warning : result.warnings) {
        std::cerr << "warning: " << warning.to_string() << "\n";
    }
    if (!result.ok()) {
        std::cerr << path << ": " << result.errors.size() << " error(s)\n";
        return exit_config_error;
    }
    std::cout << path << ": ok\n";
    return 0;
}

/// What /ready answers: ready once the configured sources run, not while starting or
/// draining, and not when admission refused a configured source (the pool cannot hold its
/// reserve). Written by the main thread, read by the endpoint's.
class readiness_state {
public:
    void started(std::size_t refused) {
        refused_.store(refused);
        phase_.store(phase::running);
    }
    void draining() { phase_.store(phase::draining); }
    /// Empty when ready; otherwise why not.
    std::string why_not() const {
        switch (phase_.load()) {
        case phase::starting:
            return "starting: sources and listeners are being set up";
        case phase::draining:
            return "draining";
        case phase::running:
            break;
        }
        if (const auto refused = refused_.load(); refused > 0) {
            return std::to_string(refused) +
                   " configured sources were refused by admission (the pool cannot hold their "
                   "reserves): see the log";
        }
        return {};
    }

private:
    enum class phase : std::uint8_t { starting, running, draining };
    std::atomic<phase> phase_{phase::starting};
    std::atomic<std::size_t> refused_{0};
};

/// The HTTP endpoint with its collector; none when [metrics] enabled = false. `failed` (said
/// in the log) when the address cannot be bound.
std::unique_ptr<http_endpoint> open_endpoint(const worker_config& cfg, sluice::worker& core,
                                             const checkpoint_store* checkpoints,
                                             const readiness_state& ready, bool& failed) {
    failed = false;
    if (!cfg.metrics.enabled) {
        return nullptr;
    }
    auto& env = core.environment();
    auto collector = std::make_shared<metrics_collector>(
        core.pool(), core.server(), core.pipeline(),
        thread_pools{cfg.threads.io_threads, cfg.threads.compute_threads,
                     cfg.threads.blocking_threads, [&env] { return env.io_load(); },
                     [&env] { return env.blocking_load(); }},
        sluice::version_string);
    collector->set_checkpoints(checkpoints);
    const std::string bind = cfg.metrics.address + ":" + std::to_string(cfg.metrics.port);
    try {
        auto endpoint = std::make_unique<http_endpoint>(cfg.metrics.address, cfg.metrics.port,
                                                        std::move(collector),
                                                        [&ready] { return ready.why_not(); });
        log_info("endpoint_open",
                 "metrics on http://" + cfg.metrics.address + ":" +
                     std::to_string(endpoint->port()) + "/metrics (also /healthz, /ready)",
                 {{"port", std::to_string(endpoint->port())}});
        return endpoint;
    } catch (const std::exception& e) {
        log_error("endpoint_failed", "metrics endpoint " + bind + ": " + e.what() +
                                         "; change [metrics] port or address, or set enabled "
                                         "= false");
        failed = true;
        return nullptr;
    }
}

struct start_counts {
    std::size_t started = 0;
    std::size_t refused = 0; ///< said on stderr, each with the admission's reason
};

/// Registers every configured source (each `count` times) and starts them, or hands them to
/// the thread-per-source baseline.
start_counts start_sources(const worker_config& cfg, source_set& sources,
                           baseline_runner& baseline) {
    start_counts counts;
    for (const auto& spec : cfg.sources) {
        if (cfg.mode == runner_mode::sluice) {
            counts.started += sources.add(spec, counts.refused);
            continue;
        }
        for (std::uint32_t i = 0; i < spec.count; ++i) {
            const source_options options = instance_options(spec, i);
            const auto answer = baseline.add(options, spec, instance_generator(spec, i));
            if (!answer.admitted()) {
                log_error("source_refused", answer.message, {{"source", options.name}});
                ++counts.refused;
            }
        }
    }
    return counts;
}

/// The log as the command line (first) and the configuration say.
void configure_log(const command_line& cl, const log_options& configured) {
    const auto level = parse_log_level(cl.log_level.empty() ? configured.level : cl.log_level);
    const auto format = parse_log_format(cl.log_format.empty() ? configured.format : cl.log_format);
    logger::instance().configure(level.value_or(log_level::info),
                                 format.value_or(log_format::text));
}

/// Opens every configured listener; false (said on stderr) when one cannot be bound.
bool open_listeners(const worker_config& cfg, source_server& server, baseline_runner& baseline) {
    for (const auto& l : cfg.listeners) {
        const bool baseline_mode = cfg.mode == runner_mode::thread_per_source;
        const auto [error, port] =
            baseline_mode ? baseline.add_tcp_listener(l) : server.add_tcp_listener(l);
        if (error) {
            log_error("listener_failed",
                      "listener '" + l.name + "' on " + l.address + ":" + std::to_string(l.port) +
                          ": " + error.message() + "; change its port or address",
                      {{"listener", l.name}});
            return false;
        }
        log_info("listener_open",
                 "listener '" + l.name + "'" + (baseline_mode ? " (thread per connection)" : "") +
                     " on " + l.address + ":" + std::to_string(port),
                 {{"listener", l.name}, {"port", std::to_string(port)}});
    }
    return true;
}

/// The main thread's wait for a signal or the duration: samples the thread count every 100 ms
/// and prints the status line every status_interval. (The real clock here is the worker's own,
/// outside the runtime.)
class control_loop {
public:
    /// `sources` is the sluice mode's (null in thread_per_source mode, which cannot reload);
    /// `config_name` is the file a SIGHUP reads again.
    control_loop(worker_config& cfg, const command_line& cl, const std::string& config_name,
                 sluice::worker& core, source_set* sources, const baseline_runner& baseline,
                 const counting_sink& out)
        : cfg_(cfg), cl_(cl), config_name_(config_name), core_(core), sources_(sources),
          baseline_(baseline), out_(out),
          status_line_(!cl.quiet && (cl.status || ::isatty(STDERR_FILENO) == 1)) {}

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
            log_info("draining", "signal " + std::to_string(first_signal.load()) + ": draining",
                     {{"signal", std::to_string(first_signal.load())}});
            return false;
        }
        if (const int hup = hangups.load(); hup != hangups_seen_) {
            hangups_seen_ = hup;
            reload();
        }
        if (sources_ != nullptr) {
            sources_->tend();
        }
        const auto now = std::chrono::steady_clock::now();
        if (cl_.duration_s > 0 && now - started_ >= std::chrono::duration<double>(cl_.duration_s)) {
            return false;
        }
        if (status_line_ && cfg_.status_interval.count() > 0 && now >= next_status_) {
            next_status_ += cfg_.status_interval;
            print_status(now);
        }
        return true;
    }
    void reload() {
        if (sources_ == nullptr) {
            log_warning("reload_unsupported", "SIGHUP: thread_per_source mode cannot reload; "
                                              "the running configuration is kept");
            return;
        }
        if (config_name_ == builtin_config_name) {
            log_warning("reload_unsupported", "SIGHUP: the built-in configuration has no file to "
                                              "read again; the running configuration is kept");
            return;
        }
        log_info("reloading", "SIGHUP: reloading " + config_name_);
        notify_reloading();
        try {
            const auto result = reload_configuration(config_name_, cfg_, *sources_);
            if (result.applied) {
                configure_log(cl_, cfg_.log);
            }
        } catch (const std::exception& e) {
            log_error("reload_refused", std::string("reload refused: ") + e.what() +
                                            "; the running configuration is kept");
        }
        notify_ready("reloaded " + config_name_);
    }

    void print_status(std::chrono::steady_clock::time_point now) {
        const double dt = std::chrono::duration<double>(now - last_).count();
        const auto s = core_.server().stats();
        const auto p = core_.pool().stats();
        const std::uint64_t bytes = out_.bytes();
        const std::uint64_t records = out_.records();
        std::array<char, 256> line{};
        std::snprintf(line.data(), line.size(),
                      "running %u stopped %u failed %u | %.1f MB/s %.0f "
                      "records/s | pool free %u/%u waiters %u | threads %zu | "
                      "source errors %llu",
                      s.sources_by_state[1] + baseline_.running_count(), s.sources_by_state[3],
                      s.sources_by_state[4], static_cast<double>(bytes - last_bytes_) / dt / 1e6,
                      static_cast<double>(records - last_records_) / dt, p.free, p.buffer_count,
                      p.waiters_sources + p.waiters_processing, process_thread_count(),
                      static_cast<unsigned long long>(out_.errors()));
        log_info("status", line.data());
        notify_status(line.data());
        last_ = now;
        last_bytes_ = bytes;
        last_records_ = records;
    }

    worker_config& cfg_; ///< as it runs: a reload changes what can change at runtime
    const command_line& cl_;
    const std::string& config_name_;
    sluice::worker& core_;
    source_set* sources_;
    const baseline_runner& baseline_;
    const counting_sink& out_;
    bool status_line_; ///< on a terminal, or asked for
    int hangups_seen_ = 0;
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
/// The [checkpoint] store, or null without one; its notices go to the log as warnings.
std::unique_ptr<directory_checkpoint_store> open_checkpoints(const checkpoint_options& options) {
    if (options.directory.empty()) {
        return nullptr;
    }
    auto store = std::make_unique<directory_checkpoint_store>(options.directory);
    store->set_notice_callback(
        [](const std::string& message) { log_warning("checkpoint", message, {}); });
    return store;
}

int run_worker(worker_config cfg, const std::string& config_name, command_line& cl) {
    if (cl.summary_path.empty()) {
        cl.summary_path = cfg.summary_json_path;
    }
    raise_open_file_limit();
    std::size_t threads_max = process_thread_count();
    // The sink outlives the worker, and the baseline (which feeds the worker's pool and
    // processing) is declared after it, so it is destroyed first.
    counting_sink out{std::chrono::microseconds(cfg.sink_cost_us_per_buffer)};
    if (!cl.records_path.empty()) {
        if (const std::string why = out.write_records_to(cl.records_path); !why.empty()) {
            log_error("records_file", why, {{"file", cl.records_path}});
            return exit_config_error;
        }
    }
    // Outlives the worker: sources save to it until they are destroyed.
    const auto checkpoints = open_checkpoints(cfg.checkpoint);
    sluice::worker core(out, {cfg.pool, cfg.threads, cfg.processing, cfg.server});
    baseline_runner baseline(core.pool(), core.pipeline(), cfg.baseline_buffers_per_source);
    readiness_state ready;
    bool endpoint_failed = false;
    const auto endpoint = open_endpoint(cfg, core, checkpoints.get(), ready, endpoint_failed);
    if (endpoint_failed) {
        return exit_config_error;
    }

    source_set sources(core.server(), checkpoints.get(), cfg.checkpoint.interval);
    const start_counts counts = start_sources(cfg, sources, baseline);
    if (!open_listeners(cfg, core.server(), baseline)) {
        return exit_config_error;
    }
    if (cfg.mode == runner_mode::thread_per_source) {
        baseline.start_all();
    }
    threads_max = std::max(threads_max, process_thread_count());
    const std::size_t started =
        cfg.mode == runner_mode::sluice ? counts.started : baseline.source_count();
    const std::string mode = cfg.mode == runner_mode::sluice ? "sluice" : "thread_per_source";
    log_info("started",
             mode + " mode, " + std::to_string(cfg.threads.io_threads) + " io + " +
                 std::to_string(cfg.threads.compute_threads) + " compute threads, " +
                 std::to_string(cfg.pool.buffer_count) + " x " +
                 std::to_string(cfg.pool.buffer_size_bytes) + " B buffers, " +
                 std::to_string(started) + " sources started, " + std::to_string(counts.refused) +
                 " refused",
             {{"mode", mode},
              {"sources_started", std::to_string(started)},
              {"sources_refused", std::to_string(counts.refused)}});
    ready.started(counts.refused);
    notify_ready(std::to_string(started) + " sources started");

    const double ran_s =
        control_loop(cfg, cl, config_name, core,
                     cfg.mode == runner_mode::sluice ? &sources : nullptr, baseline, out)
            .run(threads_max);
    threads_max = std::max(threads_max, process_thread_count());

    // Graceful drain: stop sources (partial buffers flushed), join every coroutine, let
    // processing finish, unregister everything.
    ready.draining();
    notify_stopping();
    if (endpoint) {
        endpoint->stop_metrics(); // a scrape now would read a worker going away
    }
    {
        drain_deadline deadline(cfg.drain_timeout);
        baseline.shutdown();
        core.shutdown();
    }
    logger::instance().flush_suppressed();
    const auto p = core.pool().stats();
    log_info("drained",
             "drained after " + std::to_string(ran_s) + " s: " + std::to_string(out.bytes()) +
                 " bytes, " + std::to_string(out.records()) + " records delivered; pool free " +
                 std::to_string(p.free) + "/" + std::to_string(p.buffer_count),
             {{"bytes", std::to_string(out.bytes())},
              {"records", std::to_string(out.records())},
              {"buffers_free", std::to_string(p.free)},
              {"buffers_total", std::to_string(p.buffer_count)}});
    if (!cl.summary_path.empty()) {
        write_summary(cl.summary_path, cfg,
                      {config_name, ran_s, counts.refused, threads_max, out.bytes(), out.records(),
                       out.end_of_stream(), out.errors(), core.server().stats(), baseline.stats(),
                       p, core.pipeline().stats()});
    }
    return p.free == p.buffer_count ? 0 : exit_buffer_missing;
}

/// The configuration's text and the name errors give it: --config, else the default path if
/// it exists, else the built-in demo.
std::pair<std::string, std::string> configuration_text(const command_line& cl) {
    if (!cl.config_path.empty()) {
        return {read_config_file(cl.config_path), cl.config_path};
    }
    std::error_code ignored;
    if (std::filesystem::exists(default_config_path, ignored)) {
        return {read_config_file(default_config_path), default_config_path};
    }
    return {std::string(default_worker_config()), builtin_config_name};
}

} // namespace

int main(int argc, char** argv) {
    command_line cl;
    if (const auto code = parse_command_line(argc, argv, cl)) {
        return *code;
    }
    if (cl.version) {
        std::cout << "sluiced " << sluice::version_string << "\n";
        return 0;
    }
    start_signal_thread();
    try {
        if (cl.print_default) {
            std::cout << default_worker_config();
            return 0;
        }
        if (!cl.check_path.empty()) {
            return check_config(cl.check_path);
        }
        configure_log(cl, {}); // until the configuration says otherwise
        const auto [text, name] = configuration_text(cl);
        const auto parsed = parse_worker_config(text, name);
        if (!parsed.ok()) {
            for (const auto& error : parsed.errors) {
                log_error("config_error", error.to_string());
            }
            log_error("not_started", std::to_string(parsed.errors.size()) +
                                         " configuration error(s): not started");
            return exit_config_error;
        }
        configure_log(cl, parsed.config.log);
        for (const auto& warning : parsed.warnings) {
            log_warning("config_warning", warning.to_string());
        }
        if (name == builtin_config_name) {
            log_info("built_in_config", std::string("no --config and no ") + default_config_path +
                                            ": running the built-in demo configuration "
                                            "(--print-default-config shows it)");
        } else {
            log_info("config", "configuration " + name, {{"file", name}});
        }
        return run_worker(parsed.config, name, cl);
    } catch (const std::exception& e) {
        log_error("startup_failed", e.what());
        return exit_startup_failure;
    }
}
