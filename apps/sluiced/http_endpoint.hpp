#pragma once
/// sluiced's HTTP endpoint on the [metrics] address: `/metrics` (Prometheus text format, from
/// the collector at each scrape), `/healthz` (200 while the process serves) and `/ready` (200
/// once the configured sources run and the pool holds their reserves; 503 with the reason
/// otherwise, and while draining). Boost.Beast on a thread of its own, outside the data path.
/// Requests are bounded: 8 KiB of headers, no body, 10 s to send one, 100 per connection, 64
/// connections at once.

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <prometheus/collectable.h>

namespace sluiced {

class http_endpoint {
public:
    /// Empty when ready; otherwise why not (said in the 503's body).
    using readiness = std::function<std::string()>;

    /// Binds `address`:`port` (0: any free port). Throws boost::system::system_error when it
    /// cannot.
    http_endpoint(const std::string& address, std::uint16_t port,
                  std::shared_ptr<prometheus::Collectable> metrics, readiness ready);
    http_endpoint(const http_endpoint&) = delete;
    http_endpoint& operator=(const http_endpoint&) = delete;
    /// Stops serving and joins its thread.
    ~http_endpoint();

    std::uint16_t port() const noexcept { return port_; }
    /// Scrapes after this answer 503 (the worker is going away).
    void stop_metrics() noexcept { metrics_stopped_.store(true); }

private:
    boost::asio::awaitable<void> accept_loop();
    boost::asio::awaitable<void> serve(boost::asio::ip::tcp::socket socket);

    boost::asio::io_context io_{1};
    boost::asio::ip::tcp::acceptor acceptor_;
    std::uint16_t port_ = 0;
    std::shared_ptr<prometheus::Collectable> metrics_;
    readiness ready_;
    std::atomic<bool> metrics_stopped_{false};
    std::atomic<int> connections_{0};
    std::thread thread_; ///< last: starts once the rest is constructed
};

} // namespace sluiced
