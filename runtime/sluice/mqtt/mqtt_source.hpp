#pragma once
/// An MQTT source: libmosquitto driven by the source's lane, with no library thread. The TCP
/// connect is non-blocking (`mosquitto_connect_async`) and completes on the lane; only a name
/// lookup (a host that is not an IP address) runs on the bounded blocking pool. Lookup,
/// connect, CONNACK and SUBACKs share one deadline (`handshake_timeout`), and a stop ends any
/// of them at once. The lane watches the library's socket through the seam
/// (`watch_descriptor`) and calls `mosquitto_loop_read/write/misc`; keepalive runs on the
/// seam's timers. Each payload becomes
/// one record (the payload and '\n'). The server reopens the source with its capped backoff
/// when the broker is down or the connection drops.
///
/// Delivery: QoS 0 and 1. With `clean_session = false` and a fixed `client_id` the broker keeps
/// the subscription and queues QoS 1 messages while the source is disconnected, so a broker
/// restart (with persistence) or a reconnect loses nothing. libmosquitto acknowledges a QoS 1
/// message when it has received it; the source then holds it until it is read into a buffer,
/// and reads from the broker only when nothing is held (so at most one read's worth is held).
/// A stop or a lost connection drops what is held; `mqtt_counters::dropped_at_close` counts it.
/// Payloads longer than `payload_bytes_max` are dropped and counted (policy: drop).

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "sluice/source/stream_sources.hpp"

namespace sluice::runtime {

struct mqtt_counters {
    std::atomic<std::uint64_t> messages{0};         ///< payloads received and kept
    std::atomic<std::uint64_t> oversize_dropped{0}; ///< payloads over payload_bytes_max
    std::atomic<std::uint64_t> connects{0};         ///< sessions established and subscribed
    std::atomic<std::uint64_t> dropped_at_close{0}; ///< held, not yet read, when the stream closed
};

struct mqtt_options {
    std::string host = "127.0.0.1";
    std::uint16_t port = 1883;
    std::string client_id;           ///< required when clean_session is false
    std::vector<std::string> topics; ///< subscriptions (wildcards allowed); at least one
    int qos = 1;                     ///< 0 or 1
    bool clean_session = false;      ///< false: the broker keeps the session while disconnected
    std::chrono::seconds keepalive{30};
    /// Name lookup, TCP connect, CONNACK and SUBACKs, together.
    duration handshake_timeout = std::chrono::seconds(5);
    std::uint32_t payload_bytes_max = 65536;
    std::shared_ptr<mqtt_counters> counters; ///< optional, shared with whoever wants to read them
};

class mqtt_source final : public reopening_source {
public:
    mqtt_source(environment& env, executor lane, mqtt_options options);
    source_kind kind() const noexcept override { return source_kind::mqtt; }
    std::string describe() const override;
    bool reconnects() const noexcept override { return true; }
    std::string error_detail() const override { return last_error_; }

private:
    boost::asio::awaitable<std::pair<boost::system::error_code, std::unique_ptr<byte_stream>>>
    open_stream() override;
    /// The first IPv4 address of `host`, looked up on the blocking pool: {problem, address}.
    boost::asio::awaitable<std::pair<std::string, std::string>> look_up(const std::string& host);

    mqtt_options options_;
    std::string last_error_;
};

} // namespace sluice::runtime
