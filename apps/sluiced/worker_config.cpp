#include "apps/sluiced/worker_config.hpp"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <set>
#include <sstream>
#include <stdexcept>

#include <boost/asio/ip/address.hpp>
#include <toml++/toml.h>

#include "sluice/checkpoint/checkpoint_store.hpp"
#include "sluice/checkpoint/file_position.hpp"
#include "sluice/tls/tls.hpp"

namespace sluice::runtime {

namespace {

constexpr std::string_view embedded_default =
    R"toml(# sluiced built-in default configuration (print it with --print-default-config).
# A demo: 400 generator sources at 1,000 records/s each plus a TCP listener on loopback.

[worker]
io_threads = 2          # I/O lanes, one thread each
compute_threads = 2     # oneTBB workers for processing
blocking_threads = 2    # bounded pool for legacy blocking sources
descriptor_reserve = 64 # file descriptors listeners leave free for files, clients, reconnects
status_interval_ms = 1000
drain_timeout_ms = 30000 # a drain that takes longer exits with code 5
mode = "sluice"         # or "thread_per_source" (the legacy baseline, for benchmarks)

[pool]
buffer_count = 4096
buffer_size_bytes = 16384
processing_reserve = 64 # never lent to sources; at least compute_threads
sources_max = 8192

[processing]
framing = "newline"     # or "length_prefixed"
record_bytes_max = 0    # 0 = buffer_size_bytes

[server]
backoff_initial_ms = 100
backoff_max_ms = 5000
reconnect_attempts_max = 100

[metrics]
enabled = true
address = "127.0.0.1"   # http://127.0.0.1:9401/metrics, /healthz, /ready
port = 9401

[log]
level = "info"          # error, warning, info or debug
format = "text"         # or "json": one object a line

[[source]]
name = "demo-generator"
kind = "generator"
count = 400
records_per_second = 1000.0
records_max = 0         # 0 = infinite
reserve = 1
cap = 4
flush_timeout_ms = 20

[[listener]]
name = "tcp-in"
address = "127.0.0.1"   # loopback unless configured otherwise
port = 9400
connections_max = 2048
reserve = 1
cap = 4
flush_timeout_ms = 20
)toml";

std::string kinds_allowed() {
    return "generator, tcp_client, udp, file, mqtt";
}

class checker {
public:
    checker(std::string file, std::vector<config_error>& errors)
        : file_(std::move(file)), errors_(errors) {}

    /// Where warnings go (none are kept without it).
    void collect_warnings(std::vector<config_error>* warnings) { warnings_ = warnings; }
    void warning(const toml::node* at, std::string key, std::string problem) {
        if (warnings_ != nullptr) {
            warnings_->push_back(located(at, std::move(key), std::move(problem), {}));
        }
    }

    void error(const toml::node* at, std::string key, std::string problem, std::string allowed) {
        errors_.push_back(located(at, std::move(key), std::move(problem), std::move(allowed)));
    }

    /// Reports keys of `table` that are not in `known`.
    void unknown_keys(const toml::table& table, const std::string& path,
                      std::initializer_list<std::string_view> known) {
        for (auto&& [key, node] : table) {
            if (std::find(known.begin(), known.end(), key.str()) == known.end()) {
                std::string allowed;
                for (const auto k : known) {
                    allowed += (allowed.empty() ? "" : ", ") + std::string(k);
                }
                error(&node, join(path, key.str()), "unknown key", "one of: " + allowed);
            }
        }
    }

    template <typename T>
    void integer(const toml::table& table, const std::string& path, std::string_view key, T& out,
                 std::int64_t min, std::int64_t max) {
        const toml::node* node = table.get(key);
        if (node == nullptr) {
            return;
        }
        const std::string range =
            "an integer from " + std::to_string(min) + " to " + std::to_string(max);
        // Type first: toml++ converts a float node to an integer with a plain cast, which is
        // undefined for 1e300.
        if (!node->is_integer()) {
            error(node, join(path, key), "is not an integer", range);
            return;
        }
        const auto value = node->value<std::int64_t>();
        if (!value) {
            error(node, join(path, key), "is not an integer", range);
            return;
        }
        if (*value < min || *value > max) {
            error(node, join(path, key), std::to_string(*value) + " is out of range", range);
            return;
        }
        out = static_cast<T>(*value);
    }

    void milliseconds(const toml::table& table, const std::string& path, std::string_view key,
                      duration& out, std::int64_t min, std::int64_t max) {
        std::int64_t ms = std::chrono::duration_cast<std::chrono::milliseconds>(out).count();
        integer(table, path, key, ms, min, max);
        out = std::chrono::milliseconds(ms);
    }

    void number(const toml::table& table, const std::string& path, std::string_view key,
                double& out, double min, double max) {
        const toml::node* node = table.get(key);
        if (node == nullptr) {
            return;
        }
        const auto value = node->value<double>();
        const std::string range =
            "a number from " + std::to_string(min) + " to " + std::to_string(max);
        if (!(node->is_floating_point() || node->is_integer()) || !value) {
            error(node, join(path, key), "is not a number", range);
            return;
        }
        if (*value < min || *value > max) {
            error(node, join(path, key), std::to_string(*value) + " is out of range", range);
            return;
        }
        out = *value;
    }

    bool string(const toml::table& table, const std::string& path, std::string_view key,
                std::string& out, std::string_view allowed) {
        const toml::node* node = table.get(key);
        if (node == nullptr) {
            return false;
        }
        if (!node->is_string()) {
            error(node, join(path, key), "is not a string", std::string(allowed));
            return false;
        }
        out = *node->value<std::string>();
        return true;
    }

    const toml::table* table(const toml::table& parent, std::string_view key) {
        const toml::node* node = parent.get(key);
        if (node == nullptr) {
            return nullptr;
        }
        if (!node->is_table()) {
            error(node, std::string(key), "is not a table", "a [" + std::string(key) + "] table");
            return nullptr;
        }
        return node->as_table();
    }

    bool boolean(const toml::table& table, const std::string& path, std::string_view key,
                 bool& out) {
        const toml::node* node = table.get(key);
        if (node == nullptr) {
            return false;
        }
        if (!node->is_boolean()) {
            error(node, join(path, key), "is not a boolean", "true or false");
            return false;
        }
        out = *node->value<bool>();
        return true;
    }

    /// An array of non-empty strings.
    bool strings(const toml::table& table, const std::string& path, std::string_view key,
                 std::vector<std::string>& out, std::string_view allowed) {
        const toml::node* node = table.get(key);
        if (node == nullptr) {
            return false;
        }
        const toml::array* array = node->as_array();
        if (array == nullptr) {
            error(node, join(path, key), "is not an array", std::string(allowed));
            return false;
        }
        out.clear();
        for (std::size_t i = 0; i < array->size(); ++i) {
            const auto* item = array->get(i);
            if (!item->is_string() || item->value<std::string>()->empty()) {
                error(item, join(path, key) + "[" + std::to_string(i) + "]",
                      "is not a non-empty string", std::string(allowed));
                return false;
            }
            out.push_back(*item->value<std::string>());
        }
        return true;
    }

    static std::string join(const std::string& path, std::string_view key) {
        return path.empty() ? std::string(key) : path + "." + std::string(key);
    }

private:
    config_error located(const toml::node* at, std::string key, std::string problem,
                         std::string allowed) const {
        config_error e;
        e.file = file_;
        if (at != nullptr) {
            e.line = at->source().begin.line;
            e.column = at->source().begin.column;
        }
        e.key = std::move(key);
        e.problem = std::move(problem);
        e.allowed = std::move(allowed);
        return e;
    }

    std::string file_;
    std::vector<config_error>& errors_;
    std::vector<config_error>* warnings_ = nullptr;
};

void read_limits(checker& c, const toml::table& t, const std::string& path, source_limits& limits,
                 duration& flush_timeout) {
    c.integer(t, path, "reserve", limits.reserve, 1, 1 << 20);
    c.integer(t, path, "cap", limits.cap, 1, 1 << 20);
    c.milliseconds(t, path, "flush_timeout_ms", flush_timeout, 1, 3'600'000);
    if (limits.cap < limits.reserve) {
        c.error(t.get("cap") != nullptr ? t.get("cap") : &t, path + ".cap",
                "cap " + std::to_string(limits.cap) + " is below reserve " +
                    std::to_string(limits.reserve),
                "cap ≥ reserve");
    }
}

void check_address(checker& c, const toml::table& t, const std::string& path,
                   const std::string& address) {
    boost::system::error_code error;
    boost::asio::ip::make_address(address, error);
    if (error) {
        c.error(t.get("address"), path + ".address", "'" + address + "' is not an IP address",
                "a numeric IPv4 or IPv6 address such as 127.0.0.1");
    }
}

/// [metrics]
void read_metrics(checker& c, const toml::table& root, worker_config& cfg) {
    const auto* t = c.table(root, "metrics");
    if (t == nullptr) {
        return;
    }
    c.unknown_keys(*t, "metrics", {"enabled", "address", "port"});
    if (const toml::node* node = t->get("enabled")) {
        if (!node->is_boolean()) {
            c.error(node, "metrics.enabled", "is not a boolean", "true or false");
        } else {
            cfg.metrics.enabled = *node->value<bool>();
        }
    }
    c.string(*t, "metrics", "address", cfg.metrics.address, "an IP address");
    check_address(c, *t, "metrics", cfg.metrics.address);
    c.integer(*t, "metrics", "port", cfg.metrics.port, 0, 65535);
}

/// [checkpoint]
void read_checkpoint(checker& c, const toml::table& root, worker_config& cfg) {
    const auto* t = c.table(root, "checkpoint");
    if (t == nullptr) {
        return;
    }
    c.unknown_keys(*t, "checkpoint", {"directory", "interval_ms"});
    const std::string allowed = "an existing directory the worker can write to";
    if (c.string(*t, "checkpoint", "directory", cfg.checkpoint.directory, allowed)) {
        if (const std::string why =
                directory_checkpoint_store::check_directory(cfg.checkpoint.directory);
            !why.empty()) {
            c.error(t->get("directory"), "checkpoint.directory", why, allowed);
            cfg.checkpoint.directory.clear();
        }
    } else if (t->get("directory") == nullptr) {
        c.error(t, "checkpoint.directory", "is missing", allowed);
    }
    c.milliseconds(*t, "checkpoint", "interval_ms", cfg.checkpoint.interval, 1, 3'600'000);
}

/// A file source's checkpoints, when there are any: each readable, and its own (a corrupt or
/// foreign one would fail the source at its start).
void check_file_checkpoints(checker& c, const toml::table& t, const std::string& path,
                            const worker_config& cfg, const source_spec& spec) {
    if (cfg.checkpoint.directory.empty() || spec.kind != source_kind::file) {
        return;
    }
    directory_checkpoint_store store(cfg.checkpoint.directory);
    for (std::uint32_t i = 0; i < spec.count; ++i) {
        const std::string key = instance_options(spec, i).name;
        const auto loaded = store.load(key);
        std::string why = loaded.error;
        if (why.empty() && loaded.found) {
            why = decode_file_position(loaded.value, key, store.where(key)).error;
        }
        if (!why.empty()) {
            c.error(t.get("path") != nullptr ? t.get("path") : &t, path + ".checkpoint", why,
                    "a checkpoint this source wrote, or none");
        }
    }
}

/// [log]
void read_log(checker& c, const toml::table& root, worker_config& cfg) {
    const auto* t = c.table(root, "log");
    if (t == nullptr) {
        return;
    }
    c.unknown_keys(*t, "log", {"level", "format"});
    const std::string levels = "\"error\", \"warning\", \"info\" or \"debug\"";
    if (c.string(*t, "log", "level", cfg.log.level, levels) && cfg.log.level != "error" &&
        cfg.log.level != "warning" && cfg.log.level != "info" && cfg.log.level != "debug") {
        c.error(t->get("level"), "log.level", "unknown level '" + cfg.log.level + "'", levels);
    }
    if (c.string(*t, "log", "format", cfg.log.format, "\"text\" or \"json\"") &&
        cfg.log.format != "text" && cfg.log.format != "json") {
        c.error(t->get("format"), "log.format", "unknown format '" + cfg.log.format + "'",
                "\"text\" or \"json\"");
    }
}

/// [worker]
void read_worker(checker& c, const toml::table& root, worker_config& cfg) {
    const auto* t = c.table(root, "worker");
    if (t == nullptr) {
        return;
    }
    c.unknown_keys(*t, "worker",
                   {"io_threads", "compute_threads", "blocking_threads", "descriptor_reserve",
                    "status_interval_ms", "drain_timeout_ms", "mode", "baseline_buffers_per_source",
                    "summary_json", "sink_cost_us_per_buffer"});
    c.integer(*t, "worker", "io_threads", cfg.threads.io_threads, 1, 256);
    c.integer(*t, "worker", "compute_threads", cfg.threads.compute_threads, 1, 256);
    c.integer(*t, "worker", "blocking_threads", cfg.threads.blocking_threads, 1, 256);
    c.integer(*t, "worker", "descriptor_reserve", cfg.threads.descriptor_reserve, 0, 1'000'000);
    c.milliseconds(*t, "worker", "status_interval_ms", cfg.status_interval, 0, 3'600'000);
    c.milliseconds(*t, "worker", "drain_timeout_ms", cfg.drain_timeout, 1, 86'400'000);
    c.integer(*t, "worker", "sink_cost_us_per_buffer", cfg.sink_cost_us_per_buffer, 0, 60'000'000);
    c.integer(*t, "worker", "baseline_buffers_per_source", cfg.baseline_buffers_per_source, 1,
              1 << 20);
    c.string(*t, "worker", "summary_json", cfg.summary_json_path, "a file path");
    std::string mode;
    if (c.string(*t, "worker", "mode", mode, "\"sluice\" or \"thread_per_source\"")) {
        if (mode == "sluice") {
            cfg.mode = runner_mode::sluice;
        } else if (mode == "thread_per_source") {
            cfg.mode = runner_mode::thread_per_source;
        } else {
            c.error(t->get("mode"), "worker.mode", "unknown mode '" + mode + "'",
                    "\"sluice\" or \"thread_per_source\"");
        }
    }
}

/// [pool]; returns the table (null when absent), where the cross-checks point.
const toml::table* read_pool(checker& c, const toml::table& root, worker_config& cfg) {
    const toml::table* pool_table = c.table(root, "pool");
    if (pool_table != nullptr) {
        c.unknown_keys(*pool_table, "pool",
                       {"buffer_count", "buffer_size_bytes", "processing_reserve", "sources_max"});
        c.integer(*pool_table, "pool", "buffer_count", cfg.pool.buffer_count, 2, 1 << 24);
        c.integer(*pool_table, "pool", "buffer_size_bytes", cfg.pool.buffer_size_bytes, 64,
                  1 << 30);
        c.integer(*pool_table, "pool", "processing_reserve", cfg.pool.processing_reserve, 1,
                  1 << 24);
        c.integer(*pool_table, "pool", "sources_max", cfg.pool.sources_max, 1, 1 << 24);
    }
    return pool_table;
}

/// [processing]
void read_processing(checker& c, const toml::table& root, worker_config& cfg) {
    const auto* t = c.table(root, "processing");
    if (t == nullptr) {
        return;
    }
    c.unknown_keys(*t, "processing", {"framing", "record_bytes_max"});
    std::string framing_name;
    if (c.string(*t, "processing", "framing", framing_name, "\"newline\" or \"length_prefixed\"")) {
        if (framing_name == "newline") {
            cfg.processing.record_framing = framing::newline;
        } else if (framing_name == "length_prefixed") {
            cfg.processing.record_framing = framing::length_prefixed;
        } else {
            c.error(t->get("framing"), "processing.framing",
                    "unknown framing '" + framing_name + "'", "\"newline\" or \"length_prefixed\"");
        }
    }
    c.integer(*t, "processing", "record_bytes_max", cfg.processing.record_bytes_max, 0, 1 << 30);
}

/// [server]
void read_server(checker& c, const toml::table& root, worker_config& cfg) {
    const auto* t = c.table(root, "server");
    if (t == nullptr) {
        return;
    }
    c.unknown_keys(*t, "server",
                   {"backoff_initial_ms", "backoff_max_ms", "reconnect_attempts_max"});
    c.milliseconds(*t, "server", "backoff_initial_ms", cfg.server.backoff_initial, 1, 600'000);
    c.milliseconds(*t, "server", "backoff_max_ms", cfg.server.backoff_max, 1, 3'600'000);
    c.integer(*t, "server", "reconnect_attempts_max", cfg.server.reconnect_attempts_max, 0,
              1'000'000);
    if (cfg.server.backoff_max < cfg.server.backoff_initial) {
        c.error(t->get("backoff_max_ms"), "server.backoff_max_ms", "is below backoff_initial_ms",
                "backoff_max_ms ≥ backoff_initial_ms");
    }
}

/// kind = "generator"
void read_generator(checker& c, const toml::table& t, const std::string& path, source_spec& spec,
                    std::uint64_t& next_generator_id) {
    spec.kind = source_kind::generator;
    c.number(t, path, "records_per_second", spec.generator.records_per_second, 0.0, 1e9);
    c.integer(t, path, "records_max", spec.generator.records_max, 0,
              std::numeric_limits<std::int64_t>::max());
    c.integer(t, path, "burst_records", spec.generator.burst_records, 1, 1 << 20);
    spec.generator.id = next_generator_id;
    next_generator_id += spec.count;
}

/// A `tls` table under the table at `path` ([listener.tls], [source.tls], …): its keys, then
/// the files themselves (readable, a certificate and its key, a CA), each problem located at
/// the table.
void read_tls(checker& c, const toml::table& parent, const std::string& path, tls_role role,
              std::optional<tls_options>& out) {
    const toml::node* node = parent.get("tls");
    if (node == nullptr) {
        return;
    }
    const std::string p = path + ".tls";
    const toml::table* t = node->as_table();
    if (t == nullptr) {
        c.error(node, p, "is not a table", "a tls table with certificate_file, key_file, …");
        return;
    }
    c.unknown_keys(*t, p,
                   {"certificate_file", "key_file", "ca_file", "verify_peer", "min_version",
                    "server_name", "handshake_timeout_ms"});
    tls_options o;
    c.string(*t, p, "certificate_file", o.certificate_file, "a PEM file");
    c.string(*t, p, "key_file", o.key_file, "a PEM file");
    c.string(*t, p, "ca_file", o.ca_file, "a PEM file");
    c.boolean(*t, p, "verify_peer", o.verify_peer);
    c.string(*t, p, "min_version", o.min_version, "\"1.2\" or \"1.3\"");
    c.milliseconds(*t, p, "handshake_timeout_ms", o.handshake_timeout, 1, 600'000);
    if (role == tls_role::server && t->get("server_name") != nullptr) {
        c.error(t->get("server_name"), p + ".server_name", "is for clients (the name they verify)",
                "no server_name on a listener");
    } else if (role == tls_role::client) {
        c.string(*t, p, "server_name", o.server_name, "the server's DNS name");
        if (t->get("verify_peer") != nullptr) {
            c.error(t->get("verify_peer"), p + ".verify_peer",
                    "is for listeners (a client always verifies its server)",
                    "no verify_peer on a client");
        }
    }
    const tls_check check = check_tls(o, role);
    for (const auto& problem : check.errors) {
        c.error(t, p, problem, "readable PEM files that belong together");
    }
    for (const auto& problem : check.warnings) {
        c.warning(t, p, problem);
    }
    out = std::move(o);
}

/// kind = "tcp_client"
void read_tcp_client(checker& c, const toml::table& t, const std::string& path, source_spec& spec) {
    spec.kind = source_kind::tcp_client;
    c.string(t, path, "address", spec.tcp_client.address, "an IP address");
    check_address(c, t, path, spec.tcp_client.address);
    if (t.get("port") == nullptr) {
        c.error(&t, path + ".port", "is missing", "a port from 1 to 65535");
    }
    c.integer(t, path, "port", spec.tcp_client.port, 1, 65535);
    c.milliseconds(t, path, "connect_timeout_ms", spec.tcp_client.connect_timeout, 1, 600'000);
    read_tls(c, t, path, tls_role::client, spec.tcp_client.tls);
}

/// kind = "udp"
void read_udp(checker& c, const toml::table& t, const std::string& path, source_spec& spec) {
    spec.kind = source_kind::udp;
    c.string(t, path, "address", spec.udp.address, "an IP address");
    check_address(c, t, path, spec.udp.address);
    c.integer(t, path, "port", spec.udp.port, 0, 65535);
    if (spec.count != 1) {
        c.error(t.get("count"), path + ".count", "a UDP source binds one port; count must be 1",
                "1");
    }
}

/// kind = "file"
void read_file(checker& c, const toml::table& t, const std::string& path, source_spec& spec) {
    spec.kind = source_kind::file;
    if (!c.string(t, path, "path", spec.path, "an existing readable file")) {
        c.error(&t, path + ".path", "is missing", "an existing readable file");
        return;
    }
    std::error_code fs_error;
    if (!std::filesystem::is_regular_file(spec.path, fs_error)) {
        c.error(t.get("path"), path + ".path",
                "'" + spec.path + "' does not exist or is not a regular file",
                "an existing readable file");
    }
}

/// kind = "mqtt"
void read_mqtt(checker& c, const toml::table& t, const std::string& path, source_spec& spec) {
    spec.kind = source_kind::mqtt;
    auto& m = spec.mqtt;
    c.string(t, path, "address", m.host, "a broker host name or IP address");
    c.integer(t, path, "port", m.port, 1, 65535);
    if (!c.strings(t, path, "topics", m.topics, "topic filters, e.g. [\"sensors/#\"]") ||
        m.topics.empty()) {
        c.error(t.get("topics") != nullptr ? t.get("topics") : &t, path + ".topics",
                "is missing or empty", "at least one topic filter, e.g. [\"sensors/#\"]");
    }
    c.integer(t, path, "qos", m.qos, 0, 1);
    c.string(t, path, "client_id", m.client_id, "a client id unique on the broker");
    c.boolean(t, path, "clean_session", m.clean_session);
    std::int64_t keepalive = m.keepalive.count();
    c.integer(t, path, "keepalive_s", keepalive, 5, 3600);
    m.keepalive = std::chrono::seconds(keepalive);
    c.integer(t, path, "payload_bytes_max", m.payload_bytes_max, 1, 1 << 26);
    read_tls(c, t, path, tls_role::client, m.tls);
    if (!m.clean_session && m.client_id.empty()) {
        c.error(&t, path + ".client_id",
                "is missing: a persistent session (clean_session = false) needs a "
                "client_id the broker can keep it under",
                "a client_id, or clean_session = true");
    }
    if (spec.count != 1) {
        c.error(t.get("count"), path + ".count", "an MQTT source is one session; count must be 1",
                "1");
    }
}

/// What the configured sources need of the pool.
struct configured_totals {
    std::uint64_t instances = 0; ///< sources, counting each `count`
    std::uint64_t reserved = 0;  ///< the sum of their reserves
};

/// The kind-specific keys of a [[source]]; false for an unknown kind (said as an error).
bool read_source_kind(checker& c, const toml::table& t, const std::string& path,
                      const std::string& kind, source_spec& spec,
                      std::uint64_t& next_generator_id) {
    if (kind == "generator") {
        read_generator(c, t, path, spec, next_generator_id);
    } else if (kind == "tcp_client") {
        read_tcp_client(c, t, path, spec);
    } else if (kind == "udp") {
        read_udp(c, t, path, spec);
    } else if (kind == "file") {
        read_file(c, t, path, spec);
    } else if (kind == "mqtt") {
        read_mqtt(c, t, path, spec);
    } else {
        c.error(t.get("kind"), path + ".kind", "unknown source kind '" + kind + "'",
                kinds_allowed());
        return false;
    }
    return true;
}

/// [[source]] tables; `names` collects their names (unique across sources and listeners).
configured_totals read_sources(checker& c, const toml::table& root, worker_config& cfg,
                               std::set<std::string>& names) {
    configured_totals totals;
    std::uint64_t next_generator_id = 0;
    if (const toml::node* node = root.get("source")) {
        const toml::array* array = node->as_array();
        if (array == nullptr || !array->is_array_of_tables()) {
            c.error(node, "source", "is not an array of tables", "[[source]] tables");
        } else {
            for (std::size_t i = 0; i < array->size(); ++i) {
                const auto& t = *array->get(i)->as_table();
                const std::string path = "source[" + std::to_string(i) + "]";
                source_spec spec;
                spec.name = "source-" + std::to_string(i);
                c.unknown_keys(t, path,
                               {"name",
                                "kind",
                                "count",
                                "reserve",
                                "cap",
                                "flush_timeout_ms",
                                "records_per_second",
                                "records_max",
                                "burst_records",
                                "address",
                                "port",
                                "connect_timeout_ms",
                                "tls",
                                "path",
                                "topics",
                                "qos",
                                "client_id",
                                "clean_session",
                                "keepalive_s",
                                "payload_bytes_max"});
                c.string(t, path, "name", spec.name, "a unique name");
                if (!names.insert(spec.name).second) {
                    c.error(t.get("name") != nullptr ? t.get("name") : &t, path + ".name",
                            "duplicate name '" + spec.name + "'", "a name used once");
                }
                c.integer(t, path, "count", spec.count, 1, 1'000'000);
                read_limits(c, t, path, spec.limits, spec.flush_timeout);
                std::string kind;
                if (!c.string(t, path, "kind", kind, kinds_allowed())) {
                    if (t.get("kind") == nullptr) {
                        c.error(&t, path + ".kind", "is missing", kinds_allowed());
                    }
                    continue;
                }
                if (!read_source_kind(c, t, path, kind, spec, next_generator_id)) {
                    continue;
                }
                check_file_checkpoints(c, t, path, cfg, spec);
                totals.instances += spec.count;
                totals.reserved += std::uint64_t{spec.count} * spec.limits.reserve;
                cfg.sources.push_back(std::move(spec));
            }
        }
    }
    return totals;
}

/// What [[listener]] and [[http_listener]] share, read into `l`.
void read_listener_keys(checker& c, const toml::table& t, const std::string& path,
                        listener_options& l, std::set<std::string>& names) {
    c.string(t, path, "name", l.name, "a unique name");
    if (!names.insert(l.name).second) {
        c.error(t.get("name") != nullptr ? t.get("name") : &t, path + ".name",
                "duplicate name '" + l.name + "'", "a name used once");
    }
    c.string(t, path, "address", l.address, "an IP address");
    check_address(c, t, path, l.address);
    c.integer(t, path, "port", l.port, 0, 65535);
    c.integer(t, path, "connections_max", l.connections_max, 1, 1'000'000);
    c.integer(t, path, "backlog", l.backlog, 1, 65535);
    c.milliseconds(t, path, "admission_wait_ms", l.admission_wait, 0, 60'000);
    c.milliseconds(t, path, "idle_timeout_ms", l.idle_timeout, 0, 86'400'000);
    std::int64_t keepalive_idle = l.keepalive_idle.count();
    std::int64_t keepalive_interval = l.keepalive_interval.count();
    c.integer(t, path, "keepalive_idle_s", keepalive_idle, 0, 86'400);
    c.integer(t, path, "keepalive_interval_s", keepalive_interval, 1, 3'600);
    c.integer(t, path, "keepalive_probes", l.keepalive_probes, 1, 100);
    l.keepalive_idle = std::chrono::seconds(keepalive_idle);
    l.keepalive_interval = std::chrono::seconds(keepalive_interval);
    read_limits(c, t, path, l.limits, l.flush_timeout);
    read_tls(c, t, path, tls_role::server, l.tls);
}

/// An [[http_listener]]'s own keys.
void read_http_keys(checker& c, const toml::table& t, const std::string& path, http_options& h) {
    if (c.strings(t, path, "paths", h.paths, "paths such as [\"/\", \"/ingest\"]")) {
        if (h.paths.empty()) {
            c.error(t.get("paths"), path + ".paths", "is empty",
                    "at least one path, such as [\"/\"]");
        }
        for (std::size_t i = 0; i < h.paths.size(); ++i) {
            if (h.paths[i].front() != '/' || h.paths[i].find('?') != std::string::npos) {
                c.error(t.get("paths"), path + ".paths[" + std::to_string(i) + "]",
                        "'" + h.paths[i] + "' is not a path", "a path starting with '/', no '?'");
            }
        }
    }
    c.integer(t, path, "body_bytes_max", h.body_bytes_max, 1, std::int64_t{1} << 40);
    c.integer(t, path, "header_bytes_max", h.header_bytes_max, 1024, 1 << 20);
    c.milliseconds(t, path, "buffer_wait_ms", h.buffer_wait, 0, 60'000);
    c.milliseconds(t, path, "header_timeout_ms", h.header_timeout, 1, 3'600'000);
    c.integer(t, path, "retry_after_s", h.retry_after_seconds, 1, 3'600);
}

/// [[listener]] tables (TCP) and [[http_listener]] tables: both become listener_options, an
/// HTTP one with its `http` set.
void read_listeners(checker& c, const toml::table& root, worker_config& cfg,
                    std::set<std::string>& names) {
    for (const bool http : {false, true}) {
        const std::string table = http ? "http_listener" : "listener";
        const toml::node* node = root.get(table);
        if (node == nullptr) {
            continue;
        }
        const toml::array* array = node->as_array();
        if (array == nullptr || !array->is_array_of_tables()) {
            c.error(node, table, "is not an array of tables", "[[" + table + "]] tables");
            continue;
        }
        for (std::size_t i = 0; i < array->size(); ++i) {
            const auto& t = *array->get(i)->as_table();
            const std::string path = table + "[" + std::to_string(i) + "]";
            listener_options l;
            l.name = table + "-" + std::to_string(i);
            if (http) {
                c.unknown_keys(t, path,
                               {"name",
                                "address",
                                "port",
                                "connections_max",
                                "reserve",
                                "cap",
                                "flush_timeout_ms",
                                "backlog",
                                "admission_wait_ms",
                                "idle_timeout_ms",
                                "keepalive_idle_s",
                                "keepalive_interval_s",
                                "keepalive_probes",
                                "tls",
                                "paths",
                                "body_bytes_max",
                                "header_bytes_max",
                                "buffer_wait_ms",
                                "header_timeout_ms",
                                "retry_after_s"});
                // Keep-alive connections that go quiet are closed after a minute by default.
                l.idle_timeout = std::chrono::seconds(60);
                l.http.emplace();
                read_http_keys(c, t, path, *l.http);
            } else {
                c.unknown_keys(t, path,
                               {"name", "address", "port", "connections_max", "reserve", "cap",
                                "flush_timeout_ms", "backlog", "admission_wait_ms",
                                "idle_timeout_ms", "keepalive_idle_s", "keepalive_interval_s",
                                "keepalive_probes", "tls"});
            }
            read_listener_keys(c, t, path, l, names);
            if (http && cfg.mode == runner_mode::thread_per_source) {
                c.error(&t, path, "HTTP listeners are not part of the thread-per-source baseline",
                        "worker.mode = \"sluice\", or a [[listener]] instead");
            }
            cfg.listeners.push_back(std::move(l));
        }
    }
}

/// The pool must admit what is configured; `pool_at` is where the errors point.
void check_pool_admits(checker& c, const toml::node* pool_at, worker_config& cfg,
                       const configured_totals& totals) {
    // Cross-checks: the pool must admit what is configured.
    try {
        cfg.pool.validate();
    } catch (const std::invalid_argument& e) {
        c.error(pool_at, "pool", e.what(), "see the message");
    }
    if (cfg.pool.processing_reserve < cfg.threads.compute_threads) {
        c.error(pool_at, "pool.processing_reserve",
                std::to_string(cfg.pool.processing_reserve) +
                    " is below worker.compute_threads = " +
                    std::to_string(cfg.threads.compute_threads) +
                    " (every running processing task needs an output buffer)",
                "at least compute_threads");
    }
    if (totals.reserved + cfg.pool.processing_reserve > cfg.pool.buffer_count) {
        c.error(pool_at, "pool.buffer_count",
                "the sources' reserves (" + std::to_string(totals.reserved) +
                    ") plus processing_reserve (" + std::to_string(cfg.pool.processing_reserve) +
                    ") exceed buffer_count (" + std::to_string(cfg.pool.buffer_count) + ")",
                "buffer_count ≥ " + std::to_string(totals.reserved + cfg.pool.processing_reserve) +
                    ", or fewer sources, or smaller reserves");
    }
    if (totals.instances > cfg.pool.sources_max) {
        c.error(pool_at, "pool.sources_max",
                std::to_string(totals.instances) + " sources are configured but sources_max is " +
                    std::to_string(cfg.pool.sources_max),
                "sources_max ≥ " + std::to_string(totals.instances));
    }
}

} // namespace

source_options instance_options(const source_spec& spec, std::uint32_t i) {
    source_options options;
    options.name = spec.count == 1 ? spec.name : spec.name + "#" + std::to_string(i);
    options.limits = spec.limits;
    options.flush_timeout = spec.flush_timeout;
    return options;
}

generator_options instance_generator(const source_spec& spec, std::uint32_t i) {
    auto generator = spec.generator;
    generator.id += i;
    return generator;
}

std::string read_config_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        throw std::runtime_error("cannot read configuration file '" + path + "'");
    }
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

std::string config_error::to_string() const {
    std::string out = file;
    if (line != 0) {
        out += ":" + std::to_string(line) + ":" + std::to_string(column);
    }
    out += ": " + key + ": " + problem;
    if (!allowed.empty()) {
        out += "; allowed: " + allowed;
    }
    return out;
}

std::string_view default_worker_config() noexcept {
    return embedded_default;
}

config_result parse_worker_config(std::string_view text, std::string_view file_name) {
    config_result result;
    auto& cfg = result.config;
    checker c(std::string(file_name), result.errors);
    c.collect_warnings(&result.warnings);
    toml::table root;
    try {
        root = toml::parse(text, file_name);
    } catch (const toml::parse_error& e) {
        config_error error;
        error.file = std::string(file_name);
        error.line = e.source().begin.line;
        error.column = e.source().begin.column;
        error.key = "(syntax)";
        error.problem = std::string(e.description());
        error.allowed = "TOML 1.0";
        result.errors.push_back(std::move(error));
        return result;
    }
    c.unknown_keys(root, "",
                   {"worker", "pool", "processing", "server", "source", "listener", "http_listener",
                    "metrics", "log", "checkpoint"});
    read_metrics(c, root, cfg);
    read_log(c, root, cfg);
    read_checkpoint(c, root, cfg);
    read_worker(c, root, cfg);
    const toml::table* pool_table = read_pool(c, root, cfg);
    read_processing(c, root, cfg);
    read_server(c, root, cfg);
    std::set<std::string> names;
    const configured_totals totals = read_sources(c, root, cfg, names);
    read_listeners(c, root, cfg, names);
    check_pool_admits(c,
                      pool_table != nullptr ? static_cast<const toml::node*>(pool_table)
                                            : static_cast<const toml::node*>(&root),
                      cfg, totals);
    for (auto& spec : cfg.sources) {
        spec.udp.datagram_bytes_max = cfg.pool.buffer_size_bytes;
    }
    return result;
}

} // namespace sluice::runtime
