#pragma once
/// The `sluiced` worker's configuration: TOML (toml++), validated as a whole. Every error names
/// file:line:column, the key, what is wrong and what is allowed; all errors are reported, not
/// only the first. An embedded default configuration runs a realistic demo.

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "sluice/env/production_environment.hpp"
#include "sluice/mqtt/mqtt_source.hpp"
#include "sluice/pipeline/processing.hpp"
#include "sluice/pool/buffer_pool.hpp"
#include "sluice/server/source_server.hpp"
#include "sluice/source/generator_source.hpp"
#include "sluice/source/stream_sources.hpp"

namespace sluice::runtime {

/// How sources are run.
enum class runner_mode : std::uint8_t {
    sluice,            ///< coroutines on the I/O lanes (the point of this project)
    thread_per_source, ///< the legacy baseline: a thread and fixed buffers per source
};

/// One `[[source]]` table: `count` instances of the same kind.
struct source_spec {
    std::string name;
    source_kind kind = source_kind::generator;
    std::uint32_t count = 1;
    source_limits limits{1, 4};
    duration flush_timeout = std::chrono::milliseconds(50);
    generator_options generator;   ///< kind = generator (id is set per instance)
    tcp_client_options tcp_client; ///< kind = tcp_client
    udp_options udp;               ///< kind = udp
    std::string path;              ///< kind = file
    mqtt_options mqtt;             ///< kind = mqtt
};

/// The HTTP endpoint: Prometheus metrics, /healthz and /ready. Not 9464: that is the
/// OpenTelemetry SDK's Prometheus exporter default, which the engine embedding sluice may use
/// on the same host. Prometheus's exporter range 9100–9999 is fully allocated, so no number
/// there is free; 9401 sits next to the demo's data listener (9400).
struct metrics_options {
    bool enabled = true;
    std::string address = "127.0.0.1"; ///< loopback unless configured (secure default)
    std::uint16_t port = 9401;         ///< 0 = any free port (printed at start)
};

/// [log]: the level and the line format (the command line's --log-level/--log-format win).
struct log_options {
    std::string level = "info";  ///< error, warning, info or debug
    std::string format = "text"; ///< text or json (one JSON object a line)
};

/// [checkpoint]: where sources that can resume (files) keep their processed position, so a
/// restart of the worker, or a crash, continues where processing had finished (at least
/// once). No directory: none (a new worker reads files from the start).
struct checkpoint_options {
    std::string directory;                       ///< an existing, writable directory
    duration interval = std::chrono::seconds(1); ///< between one source's saves, at most one
};

struct worker_config {
    production_options threads;
    pool_config pool{4096, 16384, 64, 16384};
    processing_options processing;
    server_options server;
    std::vector<source_spec> sources;
    std::vector<listener_options> listeners;
    runner_mode mode = runner_mode::sluice;
    std::uint32_t baseline_buffers_per_source = 4; ///< thread_per_source: fixed buffers each
    duration status_interval = std::chrono::seconds(1);
    /// Longest a graceful drain may take after a signal or --duration; then the worker exits
    /// with code 5 (what is still in flight is lost: the sources say nothing more).
    duration drain_timeout = std::chrono::seconds(30);
    /// Work the built-in sink does per buffer, in microseconds of a compute thread (a stand-in
    /// for an engine's operators: capacity drills, drain drills). 0: none.
    std::int64_t sink_cost_us_per_buffer = 0;
    std::string summary_json_path; ///< written at exit when not empty (also --summary-json)
    metrics_options metrics;
    log_options log;
    checkpoint_options checkpoint;
};

/// Instance `i` (of `spec.count`) of a [[source]]: its name ("<name>#<i>" when there are
/// several), limits and flush timeout.
source_options instance_options(const source_spec& spec, std::uint32_t i);
/// Its generator's options: ids consecutive from the spec's.
generator_options instance_generator(const source_spec& spec, std::uint32_t i);

/// The text of a configuration file; throws std::runtime_error naming the file when it cannot
/// be read.
std::string read_config_file(const std::string& path);

/// A located configuration error.
struct config_error {
    std::string file;
    std::uint32_t line = 0;   ///< 1-based; 0 when not tied to a place in the file
    std::uint32_t column = 0; ///< 1-based
    std::string key;          ///< dotted path, e.g. `source[2].port`
    std::string problem;      ///< what is wrong
    std::string allowed;      ///< what would be accepted
    std::string to_string() const;
};

struct config_result {
    worker_config config;
    std::vector<config_error> errors;
    /// Not errors, but worth saying (an expired TLS certificate): printed by --check-config,
    /// logged at start.
    std::vector<config_error> warnings;
    bool ok() const noexcept { return errors.empty(); }
};

/// Parses and validates. Never throws for bad input: everything wrong is in `errors`.
config_result parse_worker_config(std::string_view text, std::string_view file_name);

/// The configuration used when no file is given: many generator sources, a TCP listener on
/// 127.0.0.1, and a pool sized to admit them all.
std::string_view default_worker_config() noexcept;

} // namespace sluice::runtime
