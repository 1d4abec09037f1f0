#include "sim/virtual_http_client.hpp"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <utility>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "sluice/source/generator_records.hpp"

namespace sluice::sim {

namespace asio = boost::asio;
using boost::system::error_code;

namespace {

/// Parked and coroutine waits end after this many rounds without readiness (a bound).
constexpr int wait_rounds_max = 1'000'000;
/// A wait with nothing scheduled (an answer owed by the source itself) polls this often.
constexpr duration poll_period = std::chrono::milliseconds(1);

std::string hex(std::size_t n) {
    char text[20];
    const auto end = std::to_chars(text, text + sizeof(text), n, 16).ptr;
    return {text, end};
}

} // namespace

virtual_http_client::virtual_http_client(sim_environment& env, runtime::executor lane,
                                         virtual_http_script script, random_stream random,
                                         http_tally& tally)
    : env_(env), lane_(std::move(lane)), script_(script), random_(random), tally_(tally) {
    start_request(env_.now());
}

virtual_http_client::~virtual_http_client() {
    close();
}

void virtual_http_client::start_request(time_point when) {
    wire_.clear();
    sent_ = arrived_ = 0;
    answered_ = false;
    if (stopped_ || next_ >= script_.records) {
        return; // done: the client closes once the source has read everything
    }
    if (!std::exchange(repeat_, false)) {
        body_records_ = std::min<std::uint64_t>(1 + random_.below(script_.records_per_body_max),
                                                script_.records - next_);
        wrong_path_ = random_.chance(script_.wrong_path);
    } else {
        wrong_path_ = false; // sent again, to the served path
    }
    std::string body;
    runtime::generator_record_writer writer(script_.id, next_);
    std::vector<char> record(writer.record_bytes_max());
    for (std::uint64_t k = 0; k < body_records_; ++k) {
        body.append(record.data(), writer.write_next(record.data()));
    }
    wire_ = std::string("POST ") + (wrong_path_ ? "/elsewhere" : "/ingest") +
            " HTTP/1.1\r\nHost: sim\r\n";
    if (random_.chance(script_.chunked)) {
        wire_ += "Transfer-Encoding: chunked\r\n\r\n";
        for (std::size_t at = 0; at < body.size();) {
            const std::size_t n = std::min<std::size_t>(1 + random_.below(300), body.size() - at);
            wire_ += hex(n) + "\r\n" + body.substr(at, n) + "\r\n";
            at += n;
        }
        wire_ += "0\r\n\r\n";
    } else {
        wire_ += "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
    }
    next_arrival_ = when;
}

void virtual_http_client::arrive() {
    const auto gap = static_cast<std::uint64_t>(script_.gap_max.count());
    while (arrived_ < wire_.size() && next_arrival_ <= env_.now()) {
        arrived_ = std::min(wire_.size(),
                            arrived_ + 1 +
                                static_cast<std::size_t>(random_.below(script_.chunk_bytes_max)));
        next_arrival_ += duration(static_cast<duration::rep>(1 + random_.below(gap)));
    }
}

bool virtual_http_client::finished() const {
    return wire_.empty();
}

bool virtual_http_client::readable() const {
    const bool reset = script_.reset_at_bytes != 0 && wire_total_ >= script_.reset_at_bytes;
    return closed_ || reset || sent_ < arrived_ || finished();
}

time_point virtual_http_client::next_event() const {
    return arrived_ < wire_.size() ? std::max(next_arrival_, env_.now()) : env_.now() + poll_period;
}

asio::awaitable<error_code> virtual_http_client::wait_readable() {
    for (int rounds = 0; rounds < wait_rounds_max; ++rounds) {
        arrive();
        if (readable()) {
            co_return closed_ ? error_code(asio::error::operation_aborted) : error_code{};
        }
        auto token = asio::as_tuple(asio::use_awaitable);
        const time_point when = next_event();
        auto [error] = co_await asio::async_initiate<decltype(token), void(error_code)>(
            [this, when](auto handler) {
                auto slot = asio::get_associated_cancellation_slot(handler);
                const auto id = env_.add_timer(when, lane_, std::move(handler));
                waiting_ = id;
                if (slot.is_connected()) {
                    slot.assign([this, id](asio::cancellation_type_t) { env_.cancel_timer(id); });
                }
            },
            token);
        waiting_ = 0;
        if (error) {
            co_return error;
        }
    }
    co_return asio::error::timed_out;
}

bool virtual_http_client::should_park() {
    if (closed_) {
        return false;
    }
    arrive();
    return !readable();
}

bool virtual_http_client::park(runtime::wake_callback wake) {
    wait_for_event(std::move(wake), 0);
    return true;
}

void virtual_http_client::wait_for_event(runtime::wake_callback wake, int rounds) {
    const time_point when = closed_ ? env_.now() : next_event();
    waiting_ = env_.add_timer(
        when, lane_, [this, wake = std::move(wake), rounds](error_code error) mutable {
            waiting_ = 0;
            if (error || closed_) {
                wake(error ? error : error_code(asio::error::operation_aborted));
                return;
            }
            arrive();
            if (readable()) {
                wake(error_code{});
            } else if (rounds + 1 >= wait_rounds_max) {
                wake(asio::error::timed_out);
            } else {
                wait_for_event(std::move(wake), rounds + 1);
            }
        });
}

runtime::read_result virtual_http_client::read_now(std::span<std::byte> space) {
    using status = runtime::read_result::status;
    if (closed_) {
        return {status::error, 0, asio::error::operation_aborted};
    }
    arrive();
    std::uint64_t limit = arrived_ - sent_;
    if (script_.reset_at_bytes != 0) {
        if (wire_total_ >= script_.reset_at_bytes) {
            if (wire_total_ == script_.reset_at_bytes) {
                ++tally_.resets;
                ++wire_total_; // counted once
            }
            return {status::error, 0, asio::error::connection_reset};
        }
        limit = std::min(limit, script_.reset_at_bytes - wire_total_);
    }
    const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(limit, space.size()));
    if (n == 0) {
        return finished() ? runtime::read_result{status::end_of_stream, 0, {}}
                          : runtime::read_result{status::would_block, 0, {}};
    }
    std::memcpy(space.data(), wire_.data() + sent_, n);
    sent_ += n;
    wire_total_ += n;
    if (sent_ == wire_.size() && answered_) {
        start_request(std::max(resend_at_, env_.now())); // answered before it was all sent
    }
    return {status::data, n, {}};
}

std::pair<error_code, std::size_t>
virtual_http_client::write_now(std::span<const std::byte> bytes) {
    if (closed_) {
        return {asio::error::not_connected, 0};
    }
    answers_.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    take_answers();
    return {error_code{}, bytes.size()};
}

void virtual_http_client::take_answers() {
    for (;;) {
        const auto end = answers_.find("\r\n\r\n");
        if (end == std::string::npos) {
            return;
        }
        const std::string head = answers_.substr(0, end);
        std::size_t length = 0;
        const auto field = head.find("Content-Length: ");
        if (field != std::string::npos) {
            length = std::stoul(head.substr(field + 16));
        }
        if (answers_.size() < end + 4 + length) {
            return; // its text is still to come
        }
        answers_.erase(0, end + 4 + length);
        const int status =
            head.size() > 12 && head.rfind("HTTP/1.1 ", 0) == 0 ? std::atoi(head.c_str() + 9) : -1;
        answered(status);
    }
}

void virtual_http_client::answered(int status) {
    ++tally_.answers[status];
    const std::string which = describe() + " request for records " + std::to_string(next_) + "+" +
                              std::to_string(body_records_);
    if (status == 100) {
        return; // never asked for, but harmless
    }
    if (answered_ || wire_.empty()) {
        tally_.problems.push_back(which + ": a second answer, " + std::to_string(status));
        return;
    }
    answered_ = true;
    resend_at_ =
        env_.now() + duration(static_cast<duration::rep>(
                         1 + random_.below(static_cast<std::uint64_t>(script_.gap_max.count()))));
    switch (status) {
    case 204:
        if (wrong_path_) {
            tally_.problems.push_back(which + ": 204 for a path not served");
        }
        next_ += body_records_;
        break;
    case 404:
        if (!wrong_path_) {
            tally_.problems.push_back(which + ": 404 for the served path");
        }
        repeat_ = true;
        break;
    case 429:
        repeat_ = true;
        resend_at_ = env_.now() + script_.retry_after;
        break;
    case 503:
        stopped_ = true; // the source was stopped: this connection is over
        break;
    default:
        tally_.problems.push_back(which + ": unexpected answer " + std::to_string(status));
        stopped_ = true;
        break;
    }
    if (sent_ == wire_.size()) {
        start_request(std::max(resend_at_, env_.now()));
    }
}

void virtual_http_client::close() noexcept {
    closed_ = true;
    if (waiting_ != 0) {
        env_.cancel_timer(waiting_);
        waiting_ = 0;
    }
}

std::string virtual_http_client::describe() const {
    return "virtual http client " + std::to_string(script_.id);
}

} // namespace sluice::sim
