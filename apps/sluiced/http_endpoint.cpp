#include "apps/sluiced/http_endpoint.hpp"

#include <chrono>
#include <sstream>
#include <string_view>
#include <utility>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <prometheus/text_serializer.h>

namespace sluiced {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

constexpr std::size_t header_bytes_max = 8192;
constexpr int requests_per_connection_max = 100;
constexpr int connections_max = 64;
constexpr auto request_timeout = std::chrono::seconds(10);

http::response<http::string_body> answer(http::status status, std::string body,
                                         std::string_view content_type, unsigned version,
                                         bool keep_alive) {
    http::response<http::string_body> response{status, version};
    response.set(http::field::server, "sluiced");
    response.set(http::field::content_type, content_type);
    response.keep_alive(keep_alive);
    response.body() = std::move(body);
    response.prepare_payload();
    return response;
}

} // namespace

http_endpoint::http_endpoint(const std::string& address, std::uint16_t port,
                             std::shared_ptr<prometheus::Collectable> metrics, readiness ready)
    : acceptor_(io_), metrics_(std::move(metrics)), ready_(std::move(ready)) {
    const tcp::endpoint endpoint(asio::ip::make_address(address), port);
    acceptor_.open(endpoint.protocol());
    acceptor_.set_option(tcp::acceptor::reuse_address(true));
    acceptor_.bind(endpoint);
    acceptor_.listen();
    port_ = acceptor_.local_endpoint().port();
    asio::co_spawn(io_, accept_loop(), asio::detached);
    thread_ = std::thread([this] { io_.run(); });
}

http_endpoint::~http_endpoint() {
    asio::post(io_, [this] {
        boost::system::error_code ignored;
        acceptor_.close(ignored);
        io_.stop();
    });
    thread_.join();
}

asio::awaitable<void> http_endpoint::accept_loop() {
    for (;;) {
        auto [error, socket] = co_await acceptor_.async_accept(asio::as_tuple(asio::use_awaitable));
        if (error == asio::error::operation_aborted || !acceptor_.is_open()) {
            co_return;
        }
        if (error) {
            continue; // a failed accept (out of descriptors): the next one may work
        }
        if (connections_.load() >= connections_max) {
            continue; // the socket closes here: a bounded endpoint, not a queue
        }
        asio::co_spawn(io_, serve(std::move(socket)), asio::detached);
    }
}

asio::awaitable<void> http_endpoint::serve(tcp::socket socket) {
    connections_.fetch_add(1);
    struct leave {
        std::atomic<int>& count;
        ~leave() { count.fetch_sub(1); }
    } counted{connections_};
    beast::tcp_stream stream(std::move(socket));
    beast::flat_buffer buffer;
    for (int served = 0; served < requests_per_connection_max; ++served) {
        http::request_parser<http::empty_body> parser;
        parser.header_limit(header_bytes_max);
        parser.body_limit(0);
        stream.expires_after(request_timeout);
        auto [read_error, read_bytes] =
            co_await http::async_read(stream, buffer, parser, asio::as_tuple(asio::use_awaitable));
        if (read_error == http::error::end_of_stream) {
            break;
        }
        if (read_error) {
            // Malformed, too large, a body, or too slow: say so once and close.
            const auto bad =
                answer(http::status::bad_request, "bad request: " + read_error.message() + "\n",
                       "text/plain", 11, false);
            co_await http::async_write(stream, bad, asio::as_tuple(asio::use_awaitable));
            break;
        }
        const auto& request = parser.get();
        const bool keep_alive = request.keep_alive() && served + 1 < requests_per_connection_max;
        const unsigned version = request.version();
        const std::string_view target(request.target().data(), request.target().size());
        const std::string_view path = target.substr(0, target.find('?'));
        http::response<http::string_body> response;
        if (request.method() != http::verb::get && request.method() != http::verb::head) {
            response = answer(http::status::method_not_allowed, "only GET and HEAD\n", "text/plain",
                              version, keep_alive);
            response.set(http::field::allow, "GET, HEAD");
        } else if (path == "/metrics") {
            if (metrics_stopped_.load()) {
                response = answer(http::status::service_unavailable, "draining\n", "text/plain",
                                  version, keep_alive);
            } else {
                std::ostringstream text;
                prometheus::TextSerializer().Serialize(text, metrics_->Collect());
                response = answer(http::status::ok, text.str(),
                                  "text/plain; version=0.0.4; charset=utf-8", version, keep_alive);
            }
        } else if (path == "/healthz") {
            response = answer(http::status::ok, "ok\n", "text/plain", version, keep_alive);
        } else if (path == "/ready") {
            const std::string why = ready_();
            response = why.empty()
                           ? answer(http::status::ok, "ready\n", "text/plain", version, keep_alive)
                           : answer(http::status::service_unavailable, why + "\n", "text/plain",
                                    version, keep_alive);
        } else {
            response = answer(http::status::not_found, "not found: /metrics, /healthz, /ready\n",
                              "text/plain", version, keep_alive);
        }
        if (request.method() == http::verb::head) {
            const auto length = response.body().size();
            response.body().clear();
            response.content_length(length);
        }
        auto [write_error, written] =
            co_await http::async_write(stream, response, asio::as_tuple(asio::use_awaitable));
        if (write_error || !keep_alive) {
            break;
        }
    }
    boost::system::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
}

} // namespace sluiced
