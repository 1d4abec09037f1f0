#include "runtime/mqtt_source.hpp"

#include <mosquitto.h>

#include <cerrno>
#include <cstring>
#include <deque>
#include <variant>

#include <boost/asio/async_result.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "runtime/assert.hpp"

namespace sluice::runtime {

namespace asio = boost::asio;
using boost::system::error_code;

namespace {

/// mosquitto_lib_init once per process, before the first client.
void library_once() {
    static const int initialised = mosquitto_lib_init();
    (void)initialised;
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

    /// After the blocking connect: watch the socket, wait for CONNACK, subscribe, wait for the
    /// SUBACKs, all within the handshake timeout. A message on failure, empty on success.
    asio::awaitable<std::string> handshake(environment& env, const executor& lane) {
        watch_ = env.watch_descriptor(lane, mosquitto_socket(client_));
        if (!watch_) {
            co_return "cannot watch the MQTT socket (out of descriptors, or an environment "
                      "without descriptors: MQTT runs in production only)";
        }
        const auto deadline = env.now() + options_.handshake_timeout;
        while (!connack_) {
            if (auto problem = co_await step_before(env, deadline); !problem.empty()) {
                co_return problem;
            }
        }
        if (connack_code_ != 0) {
            co_return std::string("broker refused the connection: ") + mosquitto_connack_string(connack_code_);
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
        if (mosquitto_loop_misc(client_) != MOSQ_ERR_SUCCESS) {
            co_return lose();
        }
        if (mosquitto_want_write(client_)) {
            if (const auto error = co_await watch_->wait_writable()) {
                co_return error;
            }
            if (mosquitto_loop_write(client_, 1) != MOSQ_ERR_SUCCESS) {
                co_return lose();
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
        if (mosquitto_loop_read(client_, 1) != MOSQ_ERR_SUCCESS) {
            co_return lose();
        }
        // Send the PUBACKs for what was just read now (the socket is non-blocking; what does not
        // fit goes on the next turn): the sooner the broker has them, the fewer redeliveries a
        // broker crash can cause.
        if (mosquitto_want_write(client_) && mosquitto_loop_write(client_, 1) != MOSQ_ERR_SUCCESS) {
            co_return lose();
        }
        if (lost_) {
            co_return lose(); // the library reported a disconnect inside the loop call
        }
        co_return error_code{};
    }

    /// The connection is gone (the library has closed its socket): the watch goes now, not at
    /// the reopen, so nothing of this session is registered while the source backs off.
    error_code lose() noexcept {
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
            co_return "connection lost during the handshake: " + error.message();
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
    static void on_disconnect(mosquitto* /*client*/, void* user, int /*code*/) { self(user).lost_ = true; }

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

asio::awaitable<std::pair<error_code, std::unique_ptr<byte_stream>>> mqtt_source::open_stream() {
    using answer = std::pair<error_code, std::unique_ptr<byte_stream>>;
    library_once();
    auto stream = std::make_unique<mqtt_stream>(env_, lane_, options_);
    if (auto problem = stream->create(); !problem.empty()) {
        last_error_ = problem;
        co_return answer{make_error_code(boost::system::errc::invalid_argument), nullptr};
    }
    // Name lookup and the TCP handshake block: they run on the blocking pool, and the answer
    // comes back on the lane.
    struct connect_request {
        mosquitto* client;
        std::string host;
        int port;
        int keepalive;
        int code = MOSQ_ERR_UNKNOWN;
        int error_number = 0;
    };
    auto request = std::make_shared<connect_request>(
        connect_request{stream->client(), options_.host, options_.port,
                        static_cast<int>(options_.keepalive.count())});
    // Named, not a temporary inside the co_await: GCC 12 destroys a lambda temporary in a
    // co_await full-expression twice (seen here as a use-after-free of `request`).
    auto initiation = [this, request](auto handler) {
        auto shared = std::make_shared<decltype(handler)>(std::move(handler));
        env_.post_blocking([request, lane = lane_, shared] {
            request->code = mosquitto_connect(request->client, request->host.c_str(), request->port,
                                              request->keepalive);
            request->error_number = errno;
            asio::post(lane, [shared] { (*shared)(); });
        });
    };
    auto connecting = asio::async_initiate<decltype(asio::use_awaitable), void()>(std::move(initiation),
                                                                                   asio::use_awaitable);
    co_await std::move(connecting);
    const connect_request& c = *request;
    if (c.code != MOSQ_ERR_SUCCESS) {
        last_error_ = "connect to " + options_.host + ":" + std::to_string(options_.port) + ": " +
                      (c.code == MOSQ_ERR_ERRNO ? std::strerror(c.error_number) : mosquitto_strerror(c.code));
        co_return answer{asio::error::connection_refused, nullptr};
    }
    if (auto problem = co_await stream->handshake(env_, lane_); !problem.empty()) {
        last_error_ = problem;
        co_return answer{asio::error::connection_aborted, nullptr};
    }
    if (options_.counters) {
        options_.counters->connects.fetch_add(1, std::memory_order_relaxed);
    }
    last_error_.clear();
    co_return answer{error_code{}, std::move(stream)};
}

} // namespace sluice::runtime
