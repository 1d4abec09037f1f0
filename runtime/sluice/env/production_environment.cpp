#include "sluice/env/production_environment.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <stdexcept>
#include <string>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_allocator.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ip/udp.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <oneapi/tbb/global_control.h>
#include <oneapi/tbb/task_arena.h>

#include "sluice/core/assert.hpp"

namespace sluice::runtime {

namespace asio = boost::asio;
using boost::system::error_code;
using tcp = asio::ip::tcp;
using udp = asio::ip::udp;

namespace {

/// The arena's `threads` workers come from oneTBB's process-wide worker market, which by default
/// holds one worker fewer than the machine has cores. Only when that is too few (more compute
/// threads than cores) is the market raised to `threads` + 1, never lowered: a host process that
/// set its own limit, or relies on the default, keeps it, and sluice's limit is its arena's
/// max_concurrency. A raise is kept for the life of the process and only ever raised again:
/// dropping it while another arena's workers were winding down was seen to leave a freshly
/// enqueued task unrun (tests create one environment after another).
void allow_tbb_workers(std::size_t threads) {
    static std::mutex mutex;
    static std::unique_ptr<tbb::global_control> raise;
    const std::lock_guard lock(mutex);
    const std::size_t active =
        tbb::global_control::active_value(tbb::global_control::max_allowed_parallelism);
    if (threads + 1 > active) {
        raise = std::make_unique<tbb::global_control>(tbb::global_control::max_allowed_parallelism,
                                                      threads + 1);
    }
}

} // namespace

namespace {

/// True while this thread runs a handler of some lane (shared by every counting executor type).
thread_local bool inside_handler = false;

/// Wraps a lane's `io_context` executor and counts the handlers that pass through it: queued
/// from `execute` until the handler starts, active while it runs. Every query and requirement is
/// forwarded to the wrapped executor, so Asio's I/O objects find the same `io_context` and the
/// same blocking, work-tracking and relationship semantics. A handler dispatched inline from
/// inside another lane handler (blocking.possibly on the lane's own thread) is not counted
/// twice as active.
template <typename Inner> class counting_executor {
public:
    using counters = production_environment::task_counters;

    counting_executor(Inner inner, counters* count) noexcept
        : inner_(std::move(inner)), count_(count) {}

    template <typename Property>
    requires asio::can_query<const Inner&, Property>::value decltype(auto)
    query(const Property& property) const noexcept {
        return asio::query(inner_, property);
    }

    template <typename Property>
    requires asio::can_require<const Inner&, Property>::value auto
    require(const Property& property) const {
        using required = std::decay_t<decltype(asio::require(inner_, property))>;
        return counting_executor<required>(asio::require(inner_, property), count_);
    }

    template <typename Function> void execute(Function&& function) const {
        count_->queued.fetch_add(1, std::memory_order_relaxed);
        inner_.execute([count = count_, f = std::forward<Function>(function)]() mutable {
            count->queued.fetch_sub(1, std::memory_order_relaxed);
            struct running {
                counters* count;
                bool outermost;
                explicit running(counters* c) : count(c), outermost(!inside_handler) {
                    if (outermost) {
                        inside_handler = true;
                        count->active.fetch_add(1, std::memory_order_relaxed);
                    }
                }
                ~running() {
                    if (outermost) {
                        count->active.fetch_sub(1, std::memory_order_relaxed);
                        inside_handler = false;
                    }
                }
                running(const running&) = delete;
                running& operator=(const running&) = delete;
            } scope(count);
            std::move(f)();
        });
    }

    friend bool operator==(const counting_executor& a, const counting_executor& b) noexcept {
        return a.inner_ == b.inner_ && a.count_ == b.count_;
    }
    friend bool operator!=(const counting_executor& a, const counting_executor& b) noexcept {
        return !(a == b);
    }

private:
    Inner inner_;
    counters* count_;
};

} // namespace

struct production_environment::compute_pool {
    // The calling threads never join the arena, so all slots go to workers (see
    // allow_tbb_workers).
    // Initialised here, not by the first task: that took about a millisecond of the first
    // enqueue's caller (a lane, emitting the first buffer) inside the data path.
    explicit compute_pool(std::size_t threads)
        : arena((allow_tbb_workers(threads), static_cast<int>(threads)), 0) {
        arena.initialize();
    }
    tbb::task_arena arena;
};

namespace {

read_result classify(std::size_t bytes, const error_code& error) {
    if (!error) {
        return {read_result::status::data, bytes, {}};
    }
    if (error == asio::error::would_block || error == asio::error::try_again) {
        return {read_result::status::would_block, 0, {}};
    }
    if (error == asio::error::eof) {
        return {read_result::status::end_of_stream, 0, {}};
    }
    return {read_result::status::error, 0, error};
}

/// Plain operator new/delete for the operation of a parked wait. Asio's default allocator
/// recycles blocks cached per thread, which hands a long-lived wait whatever larger block a
/// short-lived operation left behind (heaptrack: 256-byte blocks for a 144-byte wait).
template <typename T> struct exact_allocator {
    using value_type = T;
    exact_allocator() noexcept = default;
    template <typename U> exact_allocator(const exact_allocator<U>& /*other*/) noexcept {}
    T* allocate(std::size_t n) { return static_cast<T*>(::operator new(n * sizeof(T))); }
    void deallocate(T* p, std::size_t /*n*/) noexcept { ::operator delete(p); }
    friend bool operator==(const exact_allocator&, const exact_allocator&) noexcept { return true; }
    friend bool operator!=(const exact_allocator&, const exact_allocator&) noexcept {
        return false;
    }
};

/// `handler` with its operation allocated exactly (for waits that last: parked sources).
template <typename Handler> auto allocated_exactly(Handler handler) {
    return asio::bind_allocator(exact_allocator<void>{}, std::move(handler));
}

/// The completion handler of a parked socket wait: calls the wake callback.
auto parked_wait_handler(wake_callback wake) {
    return allocated_exactly([wake = std::move(wake)](const error_code& error) { wake(error); });
}

/// What every lane executor holds inside its any_io_executor (see lane_executor).
using lane_executor_type = counting_executor<asio::io_context::executor_type>;
/// A TCP socket bound to a lane's concrete executor rather than to any_io_executor: 48 bytes
/// less in the socket and in every pending operation's handler work, which is memory per idle
/// connection (each one is parked on an async_wait).
using lane_tcp_socket = asio::basic_stream_socket<tcp, lane_executor_type>;

/// True when the socket has no bytes (or datagram) queued: one FIONREAD, asked only when the
/// last read returned data. An error says nothing: do not park on it.
template <typename Socket> bool nothing_queued(Socket& socket) {
    error_code error;
    const std::size_t queued = socket.available(error);
    return !error && queued == 0;
}

lane_executor_type concrete_lane(const executor& lane) {
    const auto* concrete = lane.target<lane_executor_type>();
    SLUICE_ASSERT(concrete != nullptr &&
                  "not an executor made by production_environment::lane_executor");
    return *concrete;
}

class asio_timer final : public timer {
public:
    explicit asio_timer(const executor& lane) : timer_(concrete_lane(lane)) {}
    asio::awaitable<bool> wait_for(duration delay) override {
        timer_.expires_after(delay);
        auto [error] = co_await timer_.async_wait(asio::as_tuple(asio::use_awaitable));
        co_return !error;
    }
    void on_expiry(duration delay, std::function<void(bool)> done) override {
        timer_.expires_after(delay);
        timer_.async_wait(
            allocated_exactly([done = std::move(done)](const error_code& error) { done(!error); }));
    }
    void cancel() noexcept override { timer_.cancel(); }

private:
    /// On the lane's concrete executor, as the sockets are: no any_io_executor to copy and
    /// query in every wait (a parked generator arms its timer in every step).
    using clock = std::chrono::steady_clock;
    asio::basic_waitable_timer<clock, asio::wait_traits<clock>, lane_executor_type> timer_;
};

class tcp_stream final : public byte_stream {
public:
    explicit tcp_stream(lane_tcp_socket socket) : socket_(std::move(socket)) {
        error_code ignored;
        socket_.non_blocking(true, ignored);
        peer_ = socket_.remote_endpoint(
            ignored); // the text only when asked: memory per idle connection
    }
    void keep_alive(std::chrono::seconds idle, std::chrono::seconds interval,
                    int probes) noexcept override {
        const int fd = socket_.native_handle();
        const int on = 1;
        const int idle_s = static_cast<int>(idle.count());
        const int interval_s =
            static_cast<int>(std::max<std::chrono::seconds::rep>(interval.count(), 1));
        // Best effort: a socket that refuses keeps working without it.
        ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
        ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle_s, sizeof(idle_s));
        ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval_s, sizeof(interval_s));
        ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &probes, sizeof(probes));
    }
    asio::awaitable<error_code> wait_readable() override {
        auto [error] = co_await socket_.async_wait(tcp::socket::wait_read,
                                                   asio::as_tuple(asio::use_awaitable));
        co_return error;
    }
    /// Parks once a read found the socket empty; after data (a turn that ended on its read
    /// bound, or a full buffer with no next one), only if the kernel says nothing is queued.
    bool should_park() override { return drained_ || nothing_queued(socket_); }
    void park(wake_callback wake) override {
        // A closed socket completes the wait at once with an error (posted, never inline).
        socket_.async_wait(tcp::socket::wait_read, parked_wait_handler(std::move(wake)));
    }
    read_result read_now(std::span<std::byte> space) override {
        error_code error;
        const std::size_t n = socket_.read_some(asio::buffer(space.data(), space.size()), error);
        auto result = classify(n, error);
        drained_ = result.state == read_result::status::would_block;
        return result;
    }
    void close() noexcept override {
        error_code ignored;
        socket_.close(ignored);
    }
    std::string describe() const override {
        return "tcp " + peer_.address().to_string() + ":" + std::to_string(peer_.port());
    }

private:
    lane_tcp_socket socket_;
    tcp::endpoint peer_;
    bool drained_ = true; ///< nothing read since the last empty read (a new connection too)
};

/// Readiness of a descriptor a library owns, watched through a duplicate the watch owns: the
/// reactor's registration is on the duplicate's number, which nobody else can be given while
/// the watch lives, so the library closing its own descriptor (and the number going to a new
/// socket) never lets this watch's deregistration remove someone else's registration.
class asio_descriptor_watch final : public descriptor_watch {
public:
    asio_descriptor_watch(const executor& lane, int duplicate) : descriptor_(lane, duplicate) {}
    ~asio_descriptor_watch() override { cancel(); } // the descriptor closes the duplicate
    asio_descriptor_watch(const asio_descriptor_watch&) = delete;
    asio_descriptor_watch& operator=(const asio_descriptor_watch&) = delete;
    asio::awaitable<error_code> wait_readable() override {
        return wait(asio::posix::descriptor_base::wait_read);
    }
    asio::awaitable<error_code> wait_writable() override {
        return wait(asio::posix::descriptor_base::wait_write);
    }
    void cancel() noexcept override {
        error_code ignored;
        descriptor_.cancel(ignored);
    }

private:
    asio::awaitable<error_code> wait(asio::posix::descriptor_base::wait_type type) {
        auto [error] = co_await descriptor_.async_wait(type, asio::as_tuple(asio::use_awaitable));
        co_return error;
    }
    asio::posix::stream_descriptor descriptor_;
};

/// The highest descriptor number an accepted connection may have so that `reserve` descriptors
/// stay free for everything else; no limit when the open-file limit is unlimited.
std::uint64_t highest_accepted_descriptor(std::size_t reserve) {
    rlimit limit{};
    if (getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) {
        return ~std::uint64_t{0};
    }
    return limit.rlim_cur > reserve ? limit.rlim_cur - reserve - 1 : 0;
}

class tcp_listener final : public stream_listener {
public:
    tcp_listener(tcp::acceptor acceptor, std::size_t descriptor_reserve)
        : acceptor_(std::move(acceptor)), descriptor_reserve_(descriptor_reserve) {}
    asio::awaitable<std::pair<error_code, std::unique_ptr<byte_stream>>>
    accept(executor target) override {
        lane_tcp_socket socket(concrete_lane(target));
        auto [error] = co_await acceptor_.async_accept(socket, asio::as_tuple(asio::use_awaitable));
        if (error) {
            co_return std::pair<error_code, std::unique_ptr<byte_stream>>{error, nullptr};
        }
        // The kernel hands out the lowest free descriptor, so a number this high means nearly
        // all are open: refuse the connection (the server counts it and pauses accepting) so a
        // connect flood cannot take the descriptors files, clients and reconnects need.
        if (static_cast<std::uint64_t>(socket.native_handle()) >
            highest_accepted_descriptor(descriptor_reserve_)) {
            error_code ignored;
            socket.close(ignored);
            co_return std::pair<error_code, std::unique_ptr<byte_stream>>{
                asio::error::no_descriptors, nullptr};
        }
        co_return std::pair<error_code, std::unique_ptr<byte_stream>>{
            error_code{}, std::make_unique<tcp_stream>(std::move(socket))};
    }
    void close() noexcept override {
        error_code ignored;
        acceptor_.close(ignored);
    }
    std::uint16_t port() const override {
        error_code ignored;
        return acceptor_.local_endpoint(ignored).port();
    }

private:
    tcp::acceptor acceptor_;
    std::size_t descriptor_reserve_;
};

class udp_socket final : public datagram_socket {
public:
    udp_socket(udp::socket socket, std::string description)
        : socket_(std::move(socket)), description_(std::move(description)) {
        error_code ignored;
        socket_.non_blocking(true, ignored);
    }
    asio::awaitable<error_code> wait_readable() override {
        auto [error] = co_await socket_.async_wait(udp::socket::wait_read,
                                                   asio::as_tuple(asio::use_awaitable));
        co_return error;
    }
    bool should_park() override { return drained_ || nothing_queued(socket_); }
    void park(wake_callback wake) override {
        socket_.async_wait(udp::socket::wait_read, parked_wait_handler(std::move(wake)));
    }
    std::size_t next_datagram_bytes() override {
        error_code ignored;
        return socket_.available(ignored); // Linux: the size of the next datagram
    }
    read_result read_now(std::span<std::byte> space) override {
        error_code error;
        const std::size_t next = next_datagram_bytes();
        if (next > space.size()) {
            // Would be truncated: drop it whole rather than deliver a cut record.
            std::array<std::byte, 1> scratch{};
            socket_.receive(asio::buffer(scratch), 0, error);
            return {read_result::status::error, 0, asio::error::message_size};
        }
        const std::size_t n = socket_.receive(asio::buffer(space.data(), space.size()), 0, error);
        auto result = classify(n, error);
        drained_ = result.state == read_result::status::would_block;
        if (result.state == read_result::status::data && n == 0) {
            result.state = read_result::status::would_block; // an empty datagram carries nothing
        }
        return result;
    }
    void close() noexcept override {
        error_code ignored;
        socket_.close(ignored);
    }
    std::string describe() const override { return description_; }
    std::uint16_t port() const override {
        error_code ignored;
        return socket_.local_endpoint(ignored).port();
    }

private:
    udp::socket socket_;
    std::string description_;
    bool drained_ = true; ///< nothing received since the last empty receive
};

class file_stream final : public byte_stream {
public:
    file_stream(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
    ~file_stream() override { close(); }
    file_stream(const file_stream&) = delete;
    file_stream& operator=(const file_stream&) = delete;

    asio::awaitable<error_code> wait_readable() override {
        // A regular file is always readable; yield once so a long file does not monopolise
        // its lane, and report a close as an abort.
        co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);
        co_return fd_ < 0 ? error_code(asio::error::operation_aborted) : error_code{};
    }
    read_result read_now(std::span<std::byte> space) override {
        if (fd_ < 0) {
            return {read_result::status::error, 0, asio::error::bad_descriptor};
        }
        for (int attempt = 0; attempt < 8; ++attempt) { // EINTR is retried, boundedly
            const ssize_t n = ::read(fd_, space.data(), space.size());
            if (n > 0) {
                return {read_result::status::data, static_cast<std::size_t>(n), {}};
            }
            if (n == 0) {
                return {read_result::status::end_of_stream, 0, {}};
            }
            if (errno != EINTR) {
                return {read_result::status::error, 0,
                        error_code(errno, boost::system::system_category())};
            }
        }
        return {read_result::status::would_block, 0, {}};
    }
    void close() noexcept override {
        if (fd_ >= 0) {
            ::close(fd_);
            fd_ = -1;
        }
    }
    std::string describe() const override { return "file " + path_; }

private:
    int fd_;
    std::string path_;
};

void name_thread(std::thread& thread, const std::string& name) {
    pthread_setname_np(thread.native_handle(), name.substr(0, 15).c_str());
}

} // namespace

production_environment::production_environment(const production_options& options)
    : compute_threads_(options.compute_threads), blocking_threads_(options.blocking_threads),
      descriptor_reserve_(options.descriptor_reserve), inject_faults_(options.inject_faults),
      start_(std::chrono::steady_clock::now()), random_(std::random_device{}()) {
    if (options.io_threads == 0 || options.compute_threads == 0 || options.blocking_threads == 0) {
        throw std::invalid_argument(
            "environment: io_threads, compute_threads and blocking_threads must each be at "
            "least 1");
    }
    compute_ = std::make_unique<compute_pool>(compute_threads_);
    blocking_ = std::make_unique<asio::thread_pool>(blocking_threads_);
    for (std::size_t i = 0; i < options.io_threads; ++i) {
        lanes_.push_back(std::make_unique<asio::io_context>(1));
        lane_counters_.push_back(std::make_unique<task_counters>());
        guards_.emplace_back(lanes_.back()->get_executor());
    }
    for (std::size_t i = 0; i < options.io_threads; ++i) {
        lane_threads_.emplace_back([lane = lanes_[i].get()] { lane->run(); });
        name_thread(lane_threads_.back(), "sluice-io-" + std::to_string(i));
    }
}

production_environment::~production_environment() {
    shutdown();
}

void production_environment::shutdown() {
    if (stopped_) {
        return;
    }
    stopped_ = true;
    {
        std::unique_lock lock(compute_mutex_);
        compute_idle_.wait(lock, [&] { return compute_in_flight_.load() == 0; });
    }
    blocking_->join();
    for (auto& guard : guards_) {
        guard.reset();
    }
    for (auto& lane : lanes_) {
        lane->stop();
    }
    for (auto& thread : lane_threads_) {
        thread.join();
    }
}

executor production_environment::lane_executor(std::size_t index) {
    SLUICE_ASSERT(index < lanes_.size());
    return counting_executor(lanes_[index]->get_executor(), lane_counters_[index].get());
}

std::unique_ptr<descriptor_watch> production_environment::watch_descriptor(const executor& lane,
                                                                           int fd) {
    const int duplicate = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (duplicate < 0) {
        return nullptr; // out of descriptors: the caller reports it and tries again later
    }
    try {
        return std::make_unique<asio_descriptor_watch>(lane, duplicate);
    } catch (...) {
        ::close(duplicate);
        throw;
    }
}

pool_load production_environment::io_load() const noexcept {
    pool_load load;
    for (const auto& count : lane_counters_) {
        load.queued += count->queued.load(std::memory_order_relaxed);
        load.active += count->active.load(std::memory_order_relaxed);
    }
    return load;
}

pool_load production_environment::blocking_load() const noexcept {
    return {blocking_counters_.queued.load(std::memory_order_relaxed),
            blocking_counters_.active.load(std::memory_order_relaxed)};
}

time_point production_environment::now() const noexcept {
    return std::chrono::duration_cast<duration>(std::chrono::steady_clock::now() - start_);
}

std::unique_ptr<timer> production_environment::make_timer(const executor& lane) {
    return std::make_unique<asio_timer>(lane);
}

std::uint64_t production_environment::random_u64() noexcept {
    const std::lock_guard lock(random_mutex_);
    return random_();
}

namespace {

/// A compute task that releases what its work captured before it reports itself finished, so
/// that once `compute_in_flight_` reads 0 no task still holds references (oneTBB may destroy
/// the task object itself later, on its own thread). oneTBB calls tasks as const.
struct compute_task {
    mutable std::function<void()> work;
    std::atomic<std::size_t>* in_flight;
    std::mutex* mutex;
    std::condition_variable* idle;
    void operator()() const {
        work();
        work = nullptr;
        if (in_flight->fetch_sub(1) == 1) {
            const std::lock_guard lock(*mutex);
            idle->notify_all();
        }
    }
};

} // namespace

void production_environment::post_compute(std::function<void()> work) {
    compute_in_flight_.fetch_add(1);
    compute_->arena.enqueue(
        compute_task{std::move(work), &compute_in_flight_, &compute_mutex_, &compute_idle_});
}

void production_environment::post_blocking(std::function<void()> work) {
    blocking_counters_.queued.fetch_add(1, std::memory_order_relaxed);
    asio::post(*blocking_, [this, work = std::move(work)] {
        blocking_counters_.queued.fetch_sub(1, std::memory_order_relaxed);
        blocking_counters_.active.fetch_add(1, std::memory_order_relaxed);
        work();
        blocking_counters_.active.fetch_sub(1, std::memory_order_relaxed);
    });
}

asio::awaitable<std::pair<error_code, std::unique_ptr<byte_stream>>>
production_environment::connect(executor lane, std::string address, std::uint16_t port,
                                duration timeout) {
    using result = std::pair<error_code, std::unique_ptr<byte_stream>>;
    using namespace asio::experimental::awaitable_operators;
    error_code error;
    const auto ip = asio::ip::make_address(address, error);
    if (error) {
        co_return result{error, nullptr};
    }
    lane_tcp_socket socket(concrete_lane(lane));
    asio::steady_timer deadline(lane, timeout);
    auto outcome = co_await (
        socket.async_connect(tcp::endpoint(ip, port), asio::as_tuple(asio::use_awaitable)) ||
        deadline.async_wait(asio::as_tuple(asio::use_awaitable)));
    if (outcome.index() == 1) {
        // The deadline, or a cancellation of the whole connect (a stop): say which.
        const bool cancelled = std::get<0>(std::get<1>(outcome)) == asio::error::operation_aborted;
        co_return result{cancelled ? asio::error::operation_aborted : asio::error::timed_out,
                         nullptr};
    }
    error = std::get<0>(std::get<0>(outcome));
    if (error) {
        co_return result{error, nullptr};
    }
    co_return result{error_code{}, std::make_unique<tcp_stream>(std::move(socket))};
}

std::pair<error_code, std::unique_ptr<stream_listener>>
production_environment::listen(executor lane, const std::string& address, std::uint16_t port,
                               int backlog) {
    error_code error;
    const auto ip = asio::ip::make_address(address, error);
    if (error) {
        return {error, nullptr};
    }
    tcp::acceptor acceptor(lane);
    const tcp::endpoint endpoint(ip, port);
    acceptor.open(endpoint.protocol(), error);
    if (!error) {
        acceptor.set_option(tcp::acceptor::reuse_address(true), error);
    }
    if (!error) {
        acceptor.bind(endpoint, error);
    }
    if (!error) {
        acceptor.listen(backlog, error);
    }
    if (error) {
        return {error, nullptr};
    }
    return {error_code{}, std::make_unique<tcp_listener>(std::move(acceptor), descriptor_reserve_)};
}

std::pair<error_code, std::unique_ptr<datagram_socket>>
production_environment::open_udp(executor lane, const std::string& address, std::uint16_t port) {
    error_code error;
    const auto ip = asio::ip::make_address(address, error);
    if (error) {
        return {error, nullptr};
    }
    udp::socket socket(lane);
    const udp::endpoint endpoint(ip, port);
    socket.open(endpoint.protocol(), error);
    if (!error) {
        socket.bind(endpoint, error);
    }
    if (error) {
        return {error, nullptr};
    }
    return {error_code{}, std::make_unique<udp_socket>(
                              std::move(socket), "udp " + address + ":" + std::to_string(port))};
}

std::pair<error_code, std::unique_ptr<byte_stream>>
production_environment::open_file(executor /*lane*/, const std::string& path,
                                  std::uint64_t offset) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return {error_code(errno, boost::system::system_category()), nullptr};
    }
    if (offset > 0) {
        struct stat status {};
        if (::fstat(fd, &status) != 0 || static_cast<std::uint64_t>(status.st_size) < offset ||
            ::lseek(fd, static_cast<off_t>(offset), SEEK_SET) != static_cast<off_t>(offset)) {
            ::close(fd);
            return {error_code(EINVAL, boost::system::system_category()), nullptr};
        }
    }
    return {error_code{}, std::make_unique<file_stream>(fd, path)};
}

} // namespace sluice::runtime
