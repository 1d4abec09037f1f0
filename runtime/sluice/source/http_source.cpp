// The HTTP connection source: Beast's request parser fed from a small header buffer, body bytes
// placed straight into the server's buffer, answers written without waiting.
#include "sluice/source/http_source.hpp"

#include <algorithm>
#include <cstring>
#include <utility>

#include <boost/asio/buffer.hpp>
#include <boost/asio/error.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http/basic_parser.hpp>
#include <boost/beast/http/error.hpp>

namespace sluice::runtime {

namespace asio = boost::asio;
namespace http = boost::beast::http;
using boost::system::error_code;

namespace {

/// Pending answers beyond this, unwritable: the peer pipelines without reading its answers.
constexpr std::size_t pending_bytes_max = 64U << 10U;
/// Parser steps in one `work` before it yields (a pipeline of refused requests is bounded).
constexpr int steps_per_work_max = 256;

struct answer_text {
    std::uint16_t code;
    std::string_view reason;
};

constexpr std::array<answer_text, http_answer_count> answer_texts{{
    {204, "No Content"},
    {400, "Bad Request"},
    {404, "Not Found"},
    {405, "Method Not Allowed"},
    {408, "Request Timeout"},
    {413, "Payload Too Large"},
    {429, "Too Many Requests"},
    {503, "Service Unavailable"},
}};

std::string_view path_of(std::string_view target) {
    const auto query = target.find('?');
    return query == std::string_view::npos ? target : target.substr(0, query);
}

} // namespace

std::uint16_t status_code(http_answer answer) noexcept {
    return answer_texts[static_cast<std::size_t>(answer)].code;
}

/// Beast's parser with sluice's callbacks: the request line and the Expect field are noted,
/// body bytes go to the source's current space; nothing else is stored (no header map).
class http_connection_source::parser final : public http::basic_parser<true> {
public:
    explicit parser(http_connection_source& owner) : owner_(owner) {}

private:
    void on_request_impl(http::verb method, boost::beast::string_view /*method_str*/,
                         boost::beast::string_view target, int /*version*/,
                         error_code& /*ec*/) override {
        owner_.method_post_ = method == http::verb::post;
        const auto path = path_of(std::string_view(target.data(), target.size()));
        const auto& paths = owner_.options_.paths;
        owner_.path_known_ = std::find(paths.begin(), paths.end(), path) != paths.end();
    }
    void on_response_impl(int /*code*/, boost::beast::string_view /*reason*/, int /*version*/,
                          error_code& /*ec*/) override {}
    void on_field_impl(http::field name, boost::beast::string_view /*name_string*/,
                       boost::beast::string_view value, error_code& /*ec*/) override {
        if (name == http::field::expect && boost::beast::iequals(value, "100-continue")) {
            owner_.expect_continue_ = true;
        }
    }
    void on_header_impl(error_code& /*ec*/) override {}
    void on_body_init_impl(const boost::optional<std::uint64_t>& /*content_length*/,
                           error_code& /*ec*/) override {}
    std::size_t on_body_impl(boost::beast::string_view body, error_code& /*ec*/) override {
        return owner_.take_body(std::string_view(body.data(), body.size()));
    }
    void on_chunk_header_impl(std::uint64_t /*size*/, boost::beast::string_view /*extensions*/,
                              error_code& /*ec*/) override {}
    std::size_t on_chunk_body_impl(std::uint64_t /*remain*/, boost::beast::string_view body,
                                   error_code& /*ec*/) override {
        return owner_.take_body(std::string_view(body.data(), body.size()));
    }
    void on_finish_impl(error_code& /*ec*/) override {}

    http_connection_source& owner_;
};

http_connection_source::http_connection_source(environment& env,
                                               std::unique_ptr<byte_stream> stream,
                                               const http_options& options, http_counters& counters)
    : env_(env), stream_(std::move(stream)), options_(options), counters_(counters) {}

http_connection_source::~http_connection_source() = default;

std::string http_connection_source::describe() const {
    return "http " + stream_->describe();
}

boost::asio::awaitable<error_code> http_connection_source::open() {
    co_return error_code{};
}

std::optional<error_code> http_connection_source::open_now() {
    return error_code{};
}

boost::asio::awaitable<error_code> http_connection_source::wait_readable() {
    for (;;) {
        if (work({}) != outcome::blocked) {
            co_return error_code{};
        }
        const error_code error = co_await stream_->wait_readable();
        if (error) {
            co_return error;
        }
    }
}

bool http_connection_source::should_park() {
    if (work({}) != outcome::blocked) {
        return false; // body bytes (or the end) are there: read them now
    }
    if (!parser_ && wire_begin_ == wire_end_) {
        wire_.reset(); // idle between requests: no header buffer
        wire_begin_ = wire_end_ = 0;
    }
    return true;
}

bool http_connection_source::park(wake_callback wake) {
    wake_ = std::move(wake);
    return stream_->park([this](error_code error) { woke(error); });
}

void http_connection_source::woke(error_code error) {
    // Protocol work without a buffer: the server hears of readiness only when body bytes (or
    // the end) are there; headers, refused bodies and answers are handled here.
    if (!error && work({}) == outcome::blocked &&
        stream_->park([this](error_code e) { woke(e); })) {
        return;
    }
    auto wake = std::move(wake_);
    wake_ = nullptr;
    wake(error);
}

read_result http_connection_source::read_now(std::span<std::byte> space) {
    const outcome got = work(space);
    read_result r;
    if (placed_ > 0 || got == outcome::message_end) {
        r.state = read_result::status::data;
        r.bytes = placed_;
        r.ends_message = got == outcome::message_end;
        return r;
    }
    if (got == outcome::ended) {
        return final_;
    }
    return r; // would_block
}

http_connection_source::outcome http_connection_source::work(std::span<std::byte> space) {
    place_ = space.data();
    place_left_ = space.size();
    placed_ = 0;
    for (int step = 0; step < steps_per_work_max; ++step) {
        if (!pending_.empty() && !write_pending()) {
            end({read_result::status::error, 0, asio::error::message_size},
                "the client sends requests without reading the answers (" +
                    std::to_string(pending_.size()) + " bytes of answers unwritten)");
        }
        if (phase_ == phase::closing) {
            phase_ = phase::done; // answered: the connection ends
        }
        if (phase_ == phase::done) {
            return outcome::ended;
        }
        if (newline_owed_) {
            if (place_left_ == 0) {
                return outcome::needs_space;
            }
            *place_++ = std::byte{'\n'};
            --place_left_;
            ++placed_;
            newline_owed_ = false;
        }
        if (answer_owed_) {
            return outcome::message_end; // until the server says it is delivered
        }
        if (phase_ == phase::body && expect_continue_ && !continue_sent_) {
            // Accepted: the buffer is here, so the client may send the body now.
            if (place_left_ == 0) {
                return outcome::needs_space;
            }
            pending_ += "HTTP/1.1 100 Continue\r\n\r\n";
            continue_sent_ = true;
            continue;
        }
        if (wire_begin_ == wire_end_ || need_more_) {
            const read_result r = fill();
            if (r.state == read_result::status::would_block) {
                if (parser_ && phase_ == phase::header &&
                    env_.now() - header_since_ >= options_.header_timeout) {
                    answer(http_answer::request_timeout, true,
                           "the request header was not complete within header_timeout_ms");
                    end({read_result::status::error, 0, asio::error::timed_out},
                        "request header not complete within the http_listener's "
                        "header_timeout_ms (408 sent)");
                    continue;
                }
                return outcome::blocked;
            }
            if (r.state == read_result::status::end_of_stream) {
                if (!parser_ && wire_begin_ == wire_end_) {
                    end(r, {}); // between requests: a clean end
                } else {
                    end({read_result::status::error, 0, http::error::partial_message},
                        "the client closed the connection in the middle of a request");
                }
                continue;
            }
            if (r.state != read_result::status::data) {
                end(r, {});
                continue;
            }
        }
        outcome result{};
        if (!parse_once(result)) {
            return result;
        }
    }
    return outcome::needs_space; // more to do: the server comes back (bounded work per call)
}

bool http_connection_source::parse_once(outcome& result) {
    if (!parser_) {
        parser_ = std::make_unique<parser>(*this);
        parser_->header_limit(options_.header_bytes_max);
        parser_->body_limit(options_.body_bytes_max);
        header_since_ = env_.now();
    }
    error_code ec;
    const std::size_t used =
        parser_->put(asio::buffer(wire_.get() + wire_begin_, wire_end_ - wire_begin_), ec);
    wire_begin_ += static_cast<std::uint32_t>(used);
    need_more_ = ec == http::error::need_more;
    if (need_more_) {
        if (wire_begin_ == 0 && wire_end_ == options_.header_bytes_max) {
            answer(http_answer::bad_request, true, "the request header is over header_bytes_max");
            end({read_result::status::error, 0, http::error::header_limit},
                "request header over the http_listener's header_bytes_max (400 sent)");
        }
        return true;
    }
    if (ec == http::error::body_limit) {
        // A chunked body found over the limit: what this read placed of it is taken back (a
        // part placed by earlier reads has gone to processing: README says so).
        placed_ = 0;
        answer(http_answer::payload_too_large, true,
               "the body is over body_bytes_max = " + std::to_string(options_.body_bytes_max) +
                   " bytes; send smaller bodies or raise the http_listener's body_bytes_max");
        end({read_result::status::end_of_stream, 0, {}}, {});
        return true;
    }
    if (ec) {
        answer(http_answer::bad_request, true, "malformed request: " + ec.message());
        end({read_result::status::error, 0, ec},
            "malformed request: " + ec.message() + " (400 sent)");
        return true;
    }
    if (phase_ == phase::header && parser_->is_header_done()) {
        header_done();
    }
    if (parser_->is_done()) {
        message_done(); // an accepted body: the loop ends the message
        return true;
    }
    if (used == 0 && phase_ == phase::body) {
        result = outcome::needs_space; // body bytes are there, the space is not
        return false;
    }
    return true;
}

void http_connection_source::header_done() {
    counters_.requests.fetch_add(1, std::memory_order_relaxed);
    close_after_ = !parser_->keep_alive();
    if (!method_post_) {
        answer(http_answer::method_not_allowed, close_after_ || expect_continue_,
               "only POST is accepted");
        phase_ = phase::discard;
    } else if (!path_known_) {
        answer(http_answer::not_found, close_after_ || expect_continue_,
               "no http_listener path for this target");
        phase_ = phase::discard;
    } else {
        phase_ = phase::body;
        refusable_ = true;
        body_bytes_ = 0;
        last_newline_ = true;
        return;
    }
    if (expect_continue_) {
        // The client may or may not send the body it announced: close rather than guess.
        end({read_result::status::end_of_stream, 0, {}}, {});
    }
}

void http_connection_source::message_done() {
    const bool accepted = phase_ == phase::body;
    if (accepted && body_bytes_ == 0) {
        answer(http_answer::no_content, close_after_, {}); // nothing to deliver
    }
    const bool delivers = accepted && body_bytes_ > 0;
    if (delivers) {
        answer_owed_ = true;
        newline_owed_ = !last_newline_;
    }
    next_request();
    if (!delivers && close_after_ && phase_ == phase::header) {
        end({read_result::status::end_of_stream, 0, {}}, {});
    }
}

void http_connection_source::next_request() {
    parser_.reset();
    if (phase_ != phase::closing && phase_ != phase::done) {
        phase_ = phase::header;
    }
    refusable_ = false;
    expect_continue_ = false;
    continue_sent_ = false;
    method_post_ = false;
    path_known_ = false;
}

std::size_t http_connection_source::take_body(std::string_view body) {
    if (phase_ != phase::body) {
        counters_.refused_body_bytes.fetch_add(body.size(), std::memory_order_relaxed);
        return body.size(); // refused: dropped
    }
    const std::size_t n = std::min(body.size(), place_left_);
    if (n == 0) {
        return 0;
    }
    std::memmove(place_, body.data(), n);
    place_ += n;
    place_left_ -= n;
    placed_ += n;
    body_bytes_ += n;
    refusable_ = false;
    last_newline_ = body[n - 1] == '\n';
    return n;
}

read_result http_connection_source::fill() {
    const std::uint32_t capacity = options_.header_bytes_max;
    if (!wire_) {
        wire_ = std::make_unique<char[]>(capacity);
        wire_begin_ = wire_end_ = 0;
    }
    if (wire_begin_ > 0) {
        std::memmove(wire_.get(), wire_.get() + wire_begin_, wire_end_ - wire_begin_);
        wire_end_ -= wire_begin_;
        wire_begin_ = 0;
    }
    if (wire_end_ == capacity) {
        return {read_result::status::data, 0, {}}; // full: the parser decides (header_limit)
    }
    const read_result r = stream_->read_now(std::span<std::byte>(
        reinterpret_cast<std::byte*>(wire_.get()) + wire_end_, capacity - wire_end_));
    if (r.state == read_result::status::data) {
        wire_end_ += static_cast<std::uint32_t>(r.bytes);
        need_more_ = false;
    }
    return r;
}

void http_connection_source::answer(http_answer answer, bool close_after, std::string_view why) {
    counters_.answers[static_cast<std::size_t>(answer)].fetch_add(1, std::memory_order_relaxed);
    const auto& text = answer_texts[static_cast<std::size_t>(answer)];
    std::string out =
        "HTTP/1.1 " + std::to_string(text.code) + " " + std::string(text.reason) + "\r\n";
    if (answer == http_answer::too_many_requests) {
        out += "Retry-After: " + std::to_string(options_.retry_after_seconds) + "\r\n";
    }
    if (answer == http_answer::method_not_allowed) {
        out += "Allow: POST\r\n";
    }
    if (close_after) {
        out += "Connection: close\r\n";
    }
    if (answer != http_answer::no_content) {
        out += "Content-Type: text/plain\r\nContent-Length: " + std::to_string(why.size() + 1) +
               "\r\n\r\n" + std::string(why) + "\n";
    } else {
        out += "\r\n";
    }
    pending_ += out;
    write_pending();
}

bool http_connection_source::write_pending() {
    while (!pending_.empty()) {
        const auto [error, n] = stream_->write_now(std::as_bytes(std::span(pending_)));
        if (error) {
            pending_.clear(); // the connection is gone; its read says so
            return true;
        }
        if (n == 0) {
            break;
        }
        pending_.erase(0, n);
    }
    return pending_.size() <= pending_bytes_max;
}

void http_connection_source::end(read_result how, std::string detail) {
    if (phase_ == phase::done || phase_ == phase::closing) {
        return;
    }
    final_ = how;
    detail_ = std::move(detail);
    phase_ = phase::closing;
}

duration http_connection_source::buffer_wait_max() const noexcept {
    return phase_ == phase::body && refusable_ ? options_.buffer_wait : duration::max();
}

void http_connection_source::buffer_refused() {
    if (phase_ != phase::body || !refusable_) {
        return;
    }
    const bool close = close_after_ || (expect_continue_ && !continue_sent_);
    answer(http_answer::too_many_requests, close,
           "the worker's buffers are busy: retry after " +
               std::to_string(options_.retry_after_seconds) + " s");
    phase_ = phase::discard; // what comes of the body is dropped
    if (close) {
        end({read_result::status::end_of_stream, 0, {}}, {});
    }
}

void http_connection_source::delivered() {
    if (!std::exchange(answer_owed_, false)) {
        return;
    }
    answer(http_answer::no_content, close_after_, {});
    if (close_after_) {
        end({read_result::status::end_of_stream, 0, {}}, {});
    }
}

void http_connection_source::close() noexcept {
    const bool unanswered =
        (phase_ == phase::header && (parser_ || wire_begin_ != wire_end_)) || phase_ == phase::body;
    if (unanswered && !answer_owed_) {
        // Stopped (a drain, a shutdown) while a request is under way: say so, best effort.
        try {
            answer(http_answer::service_unavailable, true,
                   "the worker is stopping; send this request again");
        } catch (...) {
            // Out of memory for the answer: the connection just closes.
        }
    }
    if (phase_ != phase::done) {
        phase_ = phase::done;
        final_ = {read_result::status::error, 0, asio::error::operation_aborted};
    }
    stream_->close();
}

} // namespace sluice::runtime
