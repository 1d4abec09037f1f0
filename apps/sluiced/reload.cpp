#include "apps/sluiced/reload.hpp"

#include <fstream>
#include <set>
#include <sstream>
#include <thread>
#include <tuple>

#include <boost/asio/error.hpp>

#include "apps/sluiced/log.hpp"
#include "sluice/mqtt/mqtt_source.hpp"
#include "sluice/source/generator_source.hpp"
#include "sluice/source/stream_sources.hpp"

namespace sluiced {

namespace {

constexpr int stop_ticks_max = 300; ///< 30 s of 100 ms control-loop ticks

/// `checkpoint`: a file source's (no store: none).
source_server::source_factory factory_for(const source_spec& spec, generator_options generator,
                                          const file_checkpoint_options& checkpoint) {
    return [spec, generator, checkpoint](environment& e,
                                         const executor& lane) -> std::unique_ptr<source> {
        switch (spec.kind) {
        case source_kind::generator:
            return std::make_unique<generator_source>(e, lane, generator);
        case source_kind::tcp_client:
            return std::make_unique<tcp_client_source>(e, lane, spec.tcp_client);
        case source_kind::udp:
            return std::make_unique<udp_source>(e, lane, spec.udp);
        case source_kind::file:
            return std::make_unique<file_source>(e, lane, spec.path, checkpoint);
        case source_kind::mqtt:
            return std::make_unique<mqtt_source>(e, lane, spec.mqtt);
        default:
            return nullptr;
        }
    };
}

/// The tables (or keys) whose new values only a restart applies.
std::vector<std::string> restart_only_changes(const worker_config& a, const worker_config& b) {
    std::vector<std::string> changed;
    const auto pool = [](const worker_config& c) {
        return std::tie(c.pool.buffer_count, c.pool.buffer_size_bytes, c.pool.processing_reserve,
                        c.pool.sources_max);
    };
    const auto threads = [](const worker_config& c) {
        return std::tie(c.threads.io_threads, c.threads.compute_threads, c.threads.blocking_threads,
                        c.threads.descriptor_reserve);
    };
    const auto worker = [](const worker_config& c) {
        return std::tie(c.mode, c.baseline_buffers_per_source, c.sink_cost_us_per_buffer,
                        c.summary_json_path);
    };
    const auto processing = [](const worker_config& c) {
        return std::tie(c.processing.record_framing, c.processing.record_bytes_max);
    };
    const auto server = [](const worker_config& c) {
        return std::tie(c.server.backoff_initial, c.server.backoff_max,
                        c.server.reconnect_attempts_max);
    };
    const auto metrics = [](const worker_config& c) {
        return std::tie(c.metrics.enabled, c.metrics.address, c.metrics.port,
                        c.checkpoint.directory, c.checkpoint.interval);
    };
    if (pool(a) != pool(b)) {
        changed.emplace_back("pool");
    }
    if (threads(a) != threads(b) || worker(a) != worker(b)) {
        changed.emplace_back("worker (threads, mode, sink cost, summary)");
    }
    if (processing(a) != processing(b)) {
        changed.emplace_back("processing");
    }
    if (server(a) != server(b)) {
        changed.emplace_back("server");
    }
    if (metrics(a) != metrics(b)) {
        changed.emplace_back("metrics or checkpoint");
    }
    return changed;
}

/// The same TLS settings (both none, or the same files and options). A listener or client whose
/// files changed on disk but not in the configuration is not reopened by a reload: renewed
/// certificates take a new path (or a restart).
bool same_tls(const std::optional<tls_options>& a, const std::optional<tls_options>& b) {
    const auto fields = [](const tls_options& t) {
        return std::tie(t.certificate_file, t.key_file, t.ca_file, t.verify_peer, t.min_version,
                        t.server_name, t.handshake_timeout);
    };
    return a.has_value() == b.has_value() && (!a || fields(*a) == fields(*b));
}

bool same_listener(const listener_options& a, const listener_options& b) {
    const auto fields = [](const listener_options& l) {
        return std::tie(l.address, l.port, l.connections_max, l.limits.reserve, l.limits.cap,
                        l.flush_timeout, l.backlog, l.admission_wait, l.idle_timeout,
                        l.keepalive_idle, l.keepalive_interval, l.keepalive_probes);
    };
    const auto http = [](const listener_options& l) {
        static const http_options none; // the tuple refers to it: it must outlive the call
        const http_options& h = l.http ? *l.http : none;
        return std::tie(h.paths, h.body_bytes_max, h.header_bytes_max, h.buffer_wait,
                        h.header_timeout, h.retry_after_seconds);
    };
    return fields(a) == fields(b) && a.http.has_value() == b.http.has_value() &&
           http(a) == http(b) && same_tls(a.tls, b.tls);
}

/// Opens `l`; a port the listener it replaces still holds (its close runs on its lane) is
/// tried again for up to a second.
void open_listener(source_server& server, const listener_options& l) {
    for (int attempt = 0;; ++attempt) {
        const auto [error, port] = server.add_tcp_listener(l);
        if (!error) {
            log_info("listener_open",
                     "listener '" + l.name + "' on " + l.address + ":" + std::to_string(port),
                     {{"listener", l.name}, {"port", std::to_string(port)}});
            return;
        }
        if (error != boost::asio::error::address_in_use || attempt == 50) {
            log_error("listener_failed",
                      "reload: listener '" + l.name + "' on " + l.address + ":" +
                          std::to_string(l.port) + ": " + error.message() +
                          "; change its port or address",
                      {{"listener", l.name}});
            return;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
}

/// Opens added listeners, closes removed ones, and closes and opens changed ones.
void apply_listeners(const worker_config& current, const worker_config& next, source_server& server,
                     reload_result& result) {
    std::map<std::string, const listener_options*> before;
    for (const auto& l : current.listeners) {
        before[l.name] = &l;
    }
    std::set<std::string> kept;
    for (const auto& l : next.listeners) {
        kept.insert(l.name);
        const auto it = before.find(l.name);
        if (it != before.end() && same_listener(*it->second, l)) {
            continue;
        }
        if (it != before.end()) {
            server.close_tcp_listener(l.name);
            ++result.listeners_closed;
        }
        open_listener(server, l);
        ++result.listeners_opened;
    }
    for (const auto& [name, l] : before) {
        if (kept.count(name) == 0) {
            server.close_tcp_listener(name);
            ++result.listeners_closed;
            log_info("listener_closed", "listener '" + name + "' closed by the reload",
                     {{"listener", name}});
        }
    }
}

} // namespace

bool same_source(const source_spec& a, const source_spec& b) {
    const auto common = [](const source_spec& s) {
        return std::tie(s.kind, s.count, s.limits.reserve, s.limits.cap, s.flush_timeout);
    };
    if (common(a) != common(b)) {
        return false;
    }
    switch (a.kind) {
    case source_kind::generator:
        return std::tie(a.generator.records_max, a.generator.records_per_second,
                        a.generator.burst_records) == std::tie(b.generator.records_max,
                                                               b.generator.records_per_second,
                                                               b.generator.burst_records);
    case source_kind::tcp_client:
        return std::tie(a.tcp_client.address, a.tcp_client.port, a.tcp_client.connect_timeout) ==
                   std::tie(b.tcp_client.address, b.tcp_client.port,
                            b.tcp_client.connect_timeout) &&
               same_tls(a.tcp_client.tls, b.tcp_client.tls);
    case source_kind::udp:
        return std::tie(a.udp.address, a.udp.port) == std::tie(b.udp.address, b.udp.port);
    case source_kind::file:
        return a.path == b.path;
    case source_kind::mqtt:
        return std::tie(a.mqtt.host, a.mqtt.port, a.mqtt.client_id, a.mqtt.topics, a.mqtt.qos,
                        a.mqtt.clean_session, a.mqtt.keepalive, a.mqtt.payload_bytes_max) ==
                   std::tie(b.mqtt.host, b.mqtt.port, b.mqtt.client_id, b.mqtt.topics, b.mqtt.qos,
                            b.mqtt.clean_session, b.mqtt.keepalive, b.mqtt.payload_bytes_max) &&
               same_tls(a.mqtt.tls, b.mqtt.tls);
    default:
        return false;
    }
}

std::size_t source_set::add(const source_spec& spec, std::size_t& refused) {
    auto& entry = running_[spec.name];
    entry.spec = spec;
    entry.handles.clear();
    std::vector<source_handle> admitted;
    for (std::uint32_t i = 0; i < spec.count; ++i) {
        const source_options options = instance_options(spec, i);
        // A file source's checkpoint is kept under its instance's name.
        const auto answer = server_.register_source(
            options, factory_for(spec, instance_generator(spec, i),
                                 {checkpoints_, options.name, checkpoint_interval_}));
        if (!answer.admitted()) {
            log_error("source_refused", answer.message, {{"source", options.name}});
            ++refused;
            continue;
        }
        admitted.push_back(answer.handle);
    }
    entry.handles = admitted;
    return server_.start(admitted); // all at once: one post per lane
}

void source_set::remove(const std::string& name) {
    const auto it = running_.find(name);
    if (it == running_.end()) {
        return;
    }
    for (const auto handle : it->second.handles) {
        server_.stop(handle);
        stopping_.push_back({handle, stop_ticks_max});
    }
    running_.erase(it);
}

void source_set::tend() {
    std::erase_if(stopping_, [this](stopping& s) {
        if (!server_.known(s.handle)) {
            return true;
        }
        const auto state = server_.state(s.handle);
        if (state != source_state::running && state != source_state::stopping) {
            server_.unregister_source(s.handle);
            return true;
        }
        if (--s.ticks_left == 0) {
            log_warning("stop_slow", "source " + std::to_string(s.handle) +
                                         " has not stopped 30 s after a reload removed it; "
                                         "it stays registered");
            return true;
        }
        return false;
    });
}

reload_result reload_configuration(const std::string& path, worker_config& current,
                                   source_set& sources) {
    reload_result result;
    const auto parsed = parse_worker_config(read_config_file(path), path);
    if (!parsed.ok()) {
        for (const auto& error : parsed.errors) {
            log_error("config_error", error.to_string());
        }
        log_error("reload_refused", "reload refused: " + std::to_string(parsed.errors.size()) +
                                        " configuration error(s) in " + path +
                                        "; the running configuration is kept");
        return result;
    }
    const worker_config& next = parsed.config;
    result.need_restart = restart_only_changes(current, next);
    for (const auto& table : result.need_restart) {
        log_warning("restart_needed",
                    "reload: " + table +
                        " changed; it applies at the next restart (kept as "
                        "it runs)",
                    {{"table", table}});
    }
    std::set<std::string> wanted;
    std::size_t refused = 0;
    for (const auto& spec : next.sources) {
        wanted.insert(spec.name);
        const auto it = sources.running().find(spec.name);
        if (it == sources.running().end()) {
            sources.add(spec, refused);
            ++result.added;
        } else if (!same_source(it->second.spec, spec)) {
            sources.remove(spec.name);
            sources.add(spec, refused);
            ++result.changed;
        } else {
            ++result.unchanged;
        }
    }
    std::vector<std::string> gone;
    for (const auto& [name, running] : sources.running()) {
        if (wanted.count(name) == 0) {
            gone.push_back(name);
        }
    }
    for (const auto& name : gone) {
        sources.remove(name);
        ++result.removed;
    }
    apply_listeners(current, next, sources.server(), result);
    current.sources = next.sources;
    current.listeners = next.listeners;
    current.log = next.log;
    current.status_interval = next.status_interval;
    current.drain_timeout = next.drain_timeout;
    result.applied = true;
    log_info("reloaded",
             "reload: " + std::to_string(result.added) + " sources added, " +
                 std::to_string(result.removed) + " removed, " + std::to_string(result.changed) +
                 " changed, " + std::to_string(result.unchanged) + " unchanged; " +
                 std::to_string(result.listeners_opened) + " listeners opened, " +
                 std::to_string(result.listeners_closed) + " closed" +
                 (refused > 0 ? "; " + std::to_string(refused) + " instances refused" : ""),
             {{"added", std::to_string(result.added)},
              {"removed", std::to_string(result.removed)},
              {"changed", std::to_string(result.changed)},
              {"unchanged", std::to_string(result.unchanged)}});
    return result;
}

} // namespace sluiced
