#include "sluice/mqtt/mqtt_source.hpp"

#include <mosquitto.h>

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <deque>
#include <variant>

#include <boost/asio/async_result.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "sluice/core/assert.hpp"

namespace sluice::runtime {

namespace asio = boost::asio;
using boost::system::error_code;

namespace {

/// mosquitto_lib_init once per process, before the first client.
void library_once() {
    static const int initialised = mosquitto_lib_init();
    (void)initialised;
}

bool is_ip_literal(const std::string& host) {
    error_code error;
    static_cast<void>(asio::ip::make_address(host, error));
    return !error;
}

/// One connected session: the library's client, its socket's watch, and the payloads received
/// and not yet read. Lives on its lane.
class mqtt_stream final : public byte_stream {
public:
    mqtt_stream(environment& env, const executor& lane, const mqtt_options& options)
        : options_(options), timer_(env.make_timer(lane)) {}
    ~mqtt_stream() override {
        close();
        watch_.reset();
        if (client_ != nullptr) {
            mosquitto_destroy(client_);
        }
    }
    mqtt_stream(const mqtt_stream&) = delete;
    mqtt_stream& operator=(const mqtt_stream&) = delete;

    /// Makes the client; a message on failure.
    std::string create() {
        client_ = mosquitto_new(options_.client_id.empty() ? nullptr : options_.client_id.c_str(),
                                options_.clean_session, this);
        if (client_ == nullptr) {
            return errno == EINVAL ? "a client_id is required when clean_session is false"
                                   : "out of memory creating the MQTT client";
        }
        mosquitto_int_option(client_, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
        mosquitto_connect_callback_set(client_, &mqtt_stream::on_connect);
        mosquitto_subscribe_callback_set(client_, &mqtt_stream::on_subscribe);
        mosquitto_message_callback_set(client_, &mqtt_stream::on_message);
        mosquitto_disconnect_callback_set(client_, &mqtt_stream::on_disconnect);
        return {};
    }

    mosquitto* client() const noexcept { return client_; }

    /// After the non-blocking connect began: watch the socket, wait for the TCP connect and
    /// the CONNACK, subscribe, wait for the SUBACKs, all before `deadline`. A message on
    /// failure, empty on success. Cancellable (a stop): every wait here is.
    asio::awaitable<std::string> handshake(environment& env, const executor& lane,
                                           time_point deadline) {
        watch_ = env.watch_descriptor(lane, mosquitto_socket(client_));
        if (!watch_) {
            co_return "cannot watch the MQTT socket (out of descriptors, or an environment "
                      "without descriptors: MQTT runs in production only)";
        }
        while (!connack_) {
            if (auto problem = co_await step_before(env, deadline); !problem.empty()) {
                co_return problem;
            }
        }
        if (connack_code_ != 0) {
            co_return std::string("broker refused the connection: ") +
                mosquitto_connack_string(connack_code_);
        }
        for (const auto& topic : options_.topics) {
            const int rc = mosquitto_subscribe(client_, nullptr, topic.c_str(), options_.qos);
            if (rc != MOSQ_ERR_SUCCESS) {
                co_return "subscribe '" + topic + "': " + mosquitto_strerror(rc);
            }
            ++suback_pending_;
        }
        while (suback_pending_ > 0) {
            if (auto problem = co_await step_before(env, deadline); !problem.empty()) {
                co_return problem;
            }
        }
        co_return std::string{};
    }

    asio::awaitable<error_code> wait_readable() override {
        // Each turn waits for the socket or the keepalive tick, so this is not a busy loop; it
        // ends when a payload is held, the connection is lost, or the stream is closed.
        for (;;) {
            if (!held_.empty()) {
                co_return error_code{};
            }
            if (closed_) {
                co_return asio::error::operation_aborted;
            }
            if (lost_) {
                co_return asio::error::connection_reset;
            }
            if (const auto error = co_await pump(keepalive_tick())) {
                if (!held_.empty()) {
                    co_return error_code{}; // deliver what arrived before the loss first
                }
                co_return error;
            }
        }
    }

    read_result read_now(std::span<std::byte> space) override {
        std::size_t n = 0;
        while (n < space.size() && !held_.empty()) {
            const std::string& front = held_.front();
            const std::size_t take = std::min(space.size() - n, front.size() - offset_);
            std::memcpy(space.data() + n, front.data() + offset_, take);
            n += take;
            offset_ += take;
            if (offset_ == front.size()) {
                held_.pop_front();
                offset_ = 0;
            }
        }
        if (n > 0) {
            return {read_result::status::data, n, {}};
        }
        if (closed_ || lost_) {
            return {read_result::status::error, 0, asio::error::connection_reset};
        }
        return {read_result::status::would_block, 0, {}};
    }

    void close() noexcept override {
        if (closed_) {
            return;
        }
        closed_ = true;
        if (options_.counters && !held_.empty()) {
            options_.counters->dropped_at_close.fetch_add(held_.size(), std::memory_order_relaxed);
        }
        held_.clear();
        if (client_ != nullptr && connack_ && !lost_) {
            mosquitto_disconnect(client_); // best effort: the socket is non-blocking
        }
        if (watch_) {
            watch_->cancel();
        }
        timer_->cancel();
    }

    std::string describe() const override {
        return "mqtt " + options_.host + ":" + std::to_string(options_.port);
    }

private:
    duration keepalive_tick() const {
        return std::min<duration>(std::chrono::seconds(1), options_.keepalive / 2);
    }

    /// One step of the library's loop: keepalive bookkeeping, pending writes, then a read when
    /// the socket is readable (or nothing when `bound` passes first).
    asio::awaitable<error_code> pump(duration bound) {
        using namespace asio::experimental::awaitable_operators;
        if (lost_) {
            co_return asio::error::connection_reset;
        }
        if (const int rc = mosquitto_loop_misc(client_); rc != MOSQ_ERR_SUCCESS) {
            co_return lose(rc);
        }
        if (mosquitto_want_write(client_)) {
            // Also the TCP connect's completion (the CONNECT packet waits for it): bounded.
            auto writable = co_await (watch_->wait_writable() || timer_->wait_for(bound));
            if (writable.index() == 1) {
                co_return error_code{}; // the bound passed: the caller's deadline decides
            }
            if (const auto error = std::get<0>(writable)) {
                co_return error;
            }
            if (const int rc = mosquitto_loop_write(client_, 1); rc != MOSQ_ERR_SUCCESS) {
                co_return lose(rc);
            }
            co_return error_code{};
        }
        auto outcome = co_await (watch_->wait_readable() || timer_->wait_for(bound));
        if (outcome.index() == 1) {
            co_return error_code{}; // the tick: keepalive runs on the next turn
        }
        if (const auto error = std::get<0>(outcome)) {
            co_return error;
        }
        if (closed_) {
            co_return asio::error::operation_aborted;
        }
        if (const int rc = mosquitto_loop_read(client_, 1); rc != MOSQ_ERR_SUCCESS) {
            co_return lose(rc);
        }
        // Send the PUBACKs for what was just read now (the socket is non-blocking; what does not
        // fit goes on the next turn): the sooner the broker has them, the fewer redeliveries a
        // broker crash can cause.
        if (mosquitto_want_write(client_)) {
            if (const int rc = mosquitto_loop_write(client_, 1); rc != MOSQ_ERR_SUCCESS) {
                co_return lose(rc);
            }
        }
        if (lost_) {
            co_return lose(MOSQ_ERR_CONN_LOST); // a disconnect reported inside the loop call
        }
        co_return error_code{};
    }

    /// The connection is gone (the library has closed its socket): the watch goes now, not at
    /// the reopen, so nothing of this session is registered while the source backs off.
    error_code lose(int rc) noexcept {
        if (loss_.empty()) {
            loss_ = rc == MOSQ_ERR_ERRNO ? std::strerror(errno) : mosquitto_strerror(rc);
        }
        lost_ = true;
        watch_.reset();
        return asio::error::connection_reset;
    }

    /// One pump step of the handshake, or why it cannot continue.
    asio::awaitable<std::string> step_before(environment& env, time_point deadline) {
        const auto remaining = deadline - env.now();
        if (remaining <= duration::zero()) {
            co_return "no CONNACK or SUBACK within the handshake timeout";
        }
        if (const auto error = co_await pump(remaining)) {
            if (error == asio::error::operation_aborted) {
                co_return "stopped during the connect";
            }
            co_return "connection lost before the session was set up: " +
                (loss_.empty() ? error.message() : loss_);
        }
        co_return std::string{};
    }

    static mqtt_stream& self(void* user) { return *static_cast<mqtt_stream*>(user); }
    static void on_connect(mosquitto* /*client*/, void* user, int code) {
        self(user).connack_ = true;
        self(user).connack_code_ = code;
    }
    static void on_subscribe(mosquitto* /*client*/, void* user, int /*mid*/, int /*count*/,
                             const int* /*granted*/) {
        auto& s = self(user);
        s.suback_pending_ = s.suback_pending_ > 0 ? s.suback_pending_ - 1 : 0;
    }
    static void on_message(mosquitto* /*client*/, void* user, const mosquitto_message* message) {
        auto& s = self(user);
        const auto length = static_cast<std::size_t>(std::max(0, message->payloadlen));
        if (length > s.options_.payload_bytes_max) {
            if (s.options_.counters) {
                s.options_.counters->oversize_dropped.fetch_add(1, std::memory_order_relaxed);
            }
            return;
        }
        std::string record(static_cast<const char*>(message->payload), length);
        record.push_back('\n');
        s.held_.push_back(std::move(record));
        if (s.options_.counters) {
            s.options_.counters->messages.fetch_add(1, std::memory_order_relaxed);
        }
    }
    static void on_disconnect(mosquitto* /*client*/, void* user, int /*code*/) {
        self(user).lost_ = true;
    }

    mqtt_options options_; ///< a copy: the stream may outlive the source's members
    std::unique_ptr<timer> timer_;
    mosquitto* client_ = nullptr;
    std::unique_ptr<descriptor_watch> watch_;
    std::deque<std::string> held_; ///< received, not yet read; bounded by one read of the socket
    std::size_t offset_ = 0;       ///< bytes of held_.front() already read
    bool connack_ = false;
    int connack_code_ = 0;
    std::size_t suback_pending_ = 0;
    bool lost_ = false;
    bool closed_ = false;
    std::string loss_; ///< why the connection was lost (the library's or the system's words)
};

} // namespace

mqtt_source::mqtt_source(environment& env, executor lane, mqtt_options options)
    : reopening_source(env, std::move(lane)), options_(std::move(options)) {
    SLUICE_ASSERT(!options_.topics.empty());
    SLUICE_ASSERT(options_.qos == 0 || options_.qos == 1);
}

std::string mqtt_source::describe() const {
    std::string topics;
    for (const auto& t : options_.topics) {
        topics += (topics.empty() ? "" : ",") + t;
    }
    return "mqtt " + options_.host + ":" + std::to_string(options_.port) + " " + topics;
}

asio::awaitable<std::pair<std::string, std::string>> mqtt_source::look_up(const std::string& host) {
    // The lookup runs to its end on the blocking pool (getaddrinfo cannot be interrupted); a
    // cancellation (a stop) completes the wait at once and its result is dropped.
    struct lookup {
        std::string host;
        std::string address;
        std::string problem;
        std::atomic<bool> answered{false};
    };
    auto request = std::make_shared<lookup>();
    request->host = host;
    auto initiation = [this, request](auto handler) {
        using handler_type = decltype(handler);
        auto shared = std::make_shared<handler_type>(std::move(handler));
        auto slot = asio::get_associated_cancellation_slot(*shared);
        const executor lane = lane_;
        if (slot.is_connected()) {
            slot.assign([request, shared, lane](asio::cancellation_type_t) {
                if (!request->answered.exchange(true)) {
                    request->problem = "stopped during the lookup";
                    asio::post(lane, [shared] { (*shared)(); });
                }
            });
        }
        env_.post_blocking([request, shared, lane] {
            addrinfo hints{};
            hints.ai_family = AF_INET;
            hints.ai_socktype = SOCK_STREAM;
            addrinfo* found = nullptr;
            const int code = ::getaddrinfo(request->host.c_str(), nullptr, &hints, &found);
            std::string address;
            std::string problem;
            if (code != 0 || found == nullptr) {
                problem = code != 0 ? ::gai_strerror(code) : "no IPv4 address";
            } else {
                char text[INET_ADDRSTRLEN] = {};
                ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(found->ai_addr)->sin_addr,
                            text, sizeof(text));
                address = text;
            }
            if (found != nullptr) {
                ::freeaddrinfo(found);
            }
            if (!request->answered.exchange(true)) {
                request->address = std::move(address);
                request->problem = std::move(problem);
                asio::post(lane, [shared] { (*shared)(); });
            }
        });
    };
    auto looking = asio::async_initiate<decltype(asio::use_awaitable), void()>(
        std::move(initiation), asio::use_awaitable);
    co_await std::move(looking);
    co_return std::make_pair(request->problem, request->address);
}

asio::awaitable<std::pair<error_code, std::unique_ptr<byte_stream>>> mqtt_source::open_stream() {
    using answer = std::pair<error_code, std::unique_ptr<byte_stream>>;
    library_once();
    auto stream = std::make_unique<mqtt_stream>(env_, lane_, options_);
    if (auto problem = stream->create(); !problem.empty()) {
        last_error_ = problem;
        co_return answer{make_error_code(boost::system::errc::invalid_argument), nullptr};
    }
    // One deadline for all of it: name lookup, TCP connect, CONNACK, SUBACKs.
    const auto deadline = env_.now() + options_.handshake_timeout;
    std::string address = options_.host;
    if (!is_ip_literal(address)) {
        // Only a name lookup blocks: on the blocking pool, and a stop does not wait for it.
        auto looked_up = co_await look_up(options_.host);
        if (!looked_up.first.empty()) {
            last_error_ = "look up '" + options_.host + "': " + looked_up.first;
            co_return answer{asio::error::host_not_found, nullptr};
        }
        address = std::move(looked_up.second);
    }
    // The TCP connect does not block: it completes on the lane, within the deadline.
    const int rc = mosquitto_connect_async(stream->client(), address.c_str(), options_.port,
                                           static_cast<int>(options_.keepalive.count()));
    if (rc != MOSQ_ERR_SUCCESS) {
        last_error_ = "connect to " + options_.host + ":" + std::to_string(options_.port) + ": " +
                      (rc == MOSQ_ERR_ERRNO ? std::strerror(errno) : mosquitto_strerror(rc));
        co_return answer{asio::error::connection_refused, nullptr};
    }
    if (auto problem = co_await stream->handshake(env_, lane_, deadline); !problem.empty()) {
        last_error_ =
            "connect to " + options_.host + ":" + std::to_string(options_.port) + ": " + problem;
        co_return answer{asio::error::connection_aborted, nullptr};
    }
    if (options_.counters) {
        options_.counters->connects.fetch_add(1, std::memory_order_relaxed);
    }
    last_error_.clear();
    co_return answer{error_code{}, std::move(stream)};
}

} // namespace sluice::runtime
