#include "apps/baseline/baseline_runner.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/io_context.hpp>

#include "sluice/core/assert.hpp"
#include "sluice/source/generator_source.hpp"

namespace sluice::runtime {

namespace asio = boost::asio;
using boost::system::error_code;
using clock_type = std::chrono::steady_clock;

struct baseline_runner::source_thread {
    source_options options;
    source_kind kind = source_kind::generator;
    generator_options generator;
    int fd = -1; ///< file or connection
    source_id pool_id;
    std::uint64_t origin = 0;
    std::shared_ptr<processing::channel> channel;
    /// Where the thread waits for its fixed buffers. Owned here, not by the thread, so it
    /// outlives every post a releasing thread may still be making when this thread ends; it is
    /// destroyed in shutdown() after the threads are joined and processing is idle.
    std::unique_ptr<asio::io_context> own = std::make_unique<asio::io_context>(1);
    std::thread thread;
    // generator state
    std::uint64_t next_record = 0;
    clock_type::time_point start{};
    std::array<char, generator_record_bytes_max> pending{};
    std::size_t pending_size = 0;
    std::size_t pending_offset = 0;
};

struct baseline_runner::listener_thread {
    listener_options options;
    int fd = -1;
    std::thread thread;
};

baseline_runner::baseline_runner(buffer_pool& pool, processing& pipeline,
                                 std::uint32_t buffers_per_source)
    : pool_(pool), processing_(pipeline), buffers_per_source_(buffers_per_source) {}

baseline_runner::~baseline_runner() {
    shutdown();
}

registration baseline_runner::add(const source_options& options, const source_spec& spec,
                                  const generator_options& generator) {
    registration answer;
    if (spec.kind != source_kind::generator && spec.kind != source_kind::file) {
        answer.status = admission_status::invalid_limits;
        answer.message = "source '" + options.name +
                         "': thread_per_source mode runs generator and file sources and TCP "
                         "listeners only";
        return answer;
    }
    // The legacy policy: a fixed number of buffers per source.
    const auto admission = pool_.register_source({buffers_per_source_, buffers_per_source_});
    answer.status = admission.status;
    if (!admission.admitted()) {
        answer.message = "source '" + options.name + "': " + admission.message;
        return answer;
    }
    auto s = std::make_unique<source_thread>();
    s->options = options;
    s->kind = spec.kind;
    s->generator = generator;
    s->pool_id = admission.id;
    s->origin = handles_.fetch_add(1);
    s->channel = processing_.open_channel(s->origin);
    if (spec.kind == source_kind::file) {
        s->fd = ::open(spec.path.c_str(), O_RDONLY | O_CLOEXEC);
    }
    answer.handle = s->origin;
    const std::lock_guard lock(mutex_);
    sources_.push_back(std::move(s));
    return answer;
}

void baseline_runner::start_all() {
    const std::lock_guard lock(mutex_);
    for (auto& s : sources_) {
        if (!s->thread.joinable()) {
            s->thread = std::thread([this, raw = s.get()] { run(*raw); });
        }
    }
}

namespace {

/// A legacy generator read: fills the space with records as the rate allows, sleeping (the
/// thread blocks) until at least one record is due.
std::size_t generator_read(std::span<std::byte> space, generator_options& g, std::uint64_t& next,
                           clock_type::time_point start, std::array<char, 64>& pending,
                           std::size_t& pending_size, std::size_t& pending_offset,
                           const std::atomic<bool>& stopping,
                           const std::function<void(clock_type::duration)>& nap_for) {
    std::size_t written = 0;
    for (int naps = 0; naps < 1000 && !stopping.load(); ++naps) {
        std::uint64_t allowed = ~std::uint64_t{0};
        if (g.records_per_second > 0) {
            const double elapsed = std::chrono::duration<double>(clock_type::now() - start).count();
            allowed = static_cast<std::uint64_t>(elapsed * g.records_per_second) + 1;
        }
        if (g.records_max != 0) {
            allowed = std::min(allowed, g.records_max);
        }
        for (;;) {
            const std::size_t n = std::min(pending_size - pending_offset, space.size() - written);
            std::memcpy(space.data() + written, pending.data() + pending_offset, n);
            pending_offset += n;
            written += n;
            if (written == space.size() || next >= allowed) {
                break;
            }
            pending_size = format_generator_record(g.id, next++, pending.data());
            pending_offset = 0;
        }
        if (written > 0 ||
            (g.records_max != 0 && next >= g.records_max && pending_offset == pending_size)) {
            return written;
        }
        // Block until the next record is due or the runner stops (nap_for wakes at shutdown):
        // an idle legacy thread sleeps, as a blocking read would, and costs no CPU.
        auto nap = std::chrono::duration_cast<clock_type::duration>(std::chrono::hours(1));
        if (g.records_per_second > 0) {
            const auto due = start + std::chrono::duration_cast<clock_type::duration>(
                                         std::chrono::duration<double>(static_cast<double>(next) /
                                                                       g.records_per_second));
            nap = std::clamp(due - clock_type::now(),
                             clock_type::duration(std::chrono::microseconds(100)), nap);
        }
        nap_for(nap);
    }
    return written;
}

} // namespace

void baseline_runner::run(source_thread& s) {
    running_.fetch_add(1);
    asio::io_context& own = *s.own; // the thread blocks in here while its fixed buffers are all out
    std::uint64_t sequence = 0;
    s.start = clock_type::now();
    bool failed = false;
    bool ended = false;
    bool stepped = false;
    while (!stopping_.load()) {
        buffer b = pool_.try_acquire(s.pool_id);
        if (!b) {
            asio::cancellation_signal cancel;
            bool done = false;
            pool_.async_acquire(
                s.pool_id, asio::bind_cancellation_slot(
                               cancel.slot(), asio::bind_executor(own, [&](error_code, buffer got) {
                                   b = std::move(got);
                                   done = true;
                               })));
            while (!done) {
                own.restart();
                own.run_one_for(std::chrono::milliseconds(20));
                if (!done && stopping_.load()) {
                    cancel.emit(asio::cancellation_type::terminal);
                }
            }
            if (!b) {
                break;
            }
        }
        std::size_t n = 0;
        if (s.kind == source_kind::generator) {
            n = generator_read(
                b.free_space(), s.generator, s.next_record, s.start, s.pending, s.pending_size,
                s.pending_offset, stopping_, [this](clock_type::duration nap) {
                    std::unique_lock lock(stop_mutex_);
                    stop_cv_.wait_for(lock, nap, [this] { return stopping_.load(); });
                });
            ended =
                n == 0 && s.generator.records_max != 0 && s.next_record >= s.generator.records_max;
        } else {
            const ssize_t r = ::read(s.fd, b.free_space().data(), b.free_space().size());
            failed = r < 0;
            ended = r == 0;
            n = r > 0 ? static_cast<std::size_t>(r) : 0;
        }
        if (n > 0) {
            b.commit_bytes(static_cast<std::uint32_t>(n));
            b.set_origin_id(s.origin);
            b.set_sequence(sequence++);
            const auto reason = b.full() ? flush_reason::full : flush_reason::timeout;
            b.set_reason(reason);
            flushes_[static_cast<std::size_t>(reason)].fetch_add(1);
            processing_.submit(s.channel, std::move(b));
        }
        if (!stepped) {
            stepped = true;
            first_steps_.fetch_add(1);
        }
        if (failed || ended) {
            break;
        }
    }
    if (failed) {
        processing_.error(s.channel, "source '" + s.options.name + "': read failed");
    } else if (ended) {
        processing_.end_of_stream(s.channel);
    }
    running_.fetch_sub(1);
}

std::pair<error_code, std::uint16_t> baseline_runner::add_tcp_listener(const listener_options& l) {
    auto lt = std::make_unique<listener_thread>();
    lt->options = l;
    lt->fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lt->fd < 0) {
        return {error_code(errno, boost::system::system_category()), 0};
    }
    const int one = 1;
    ::setsockopt(lt->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(l.port);
    if (::inet_pton(AF_INET, l.address.c_str(), &address.sin_addr) != 1) {
        ::close(lt->fd);
        return {make_error_code(boost::system::errc::invalid_argument), 0};
    }
    if (::bind(lt->fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
        ::listen(lt->fd, l.backlog) != 0) {
        const error_code error(errno, boost::system::system_category());
        ::close(lt->fd);
        return {error, 0};
    }
    socklen_t length = sizeof(address);
    ::getsockname(lt->fd, reinterpret_cast<sockaddr*>(&address), &length);
    const std::uint16_t port = ntohs(address.sin_port);
    auto* raw = lt.get();
    {
        const std::lock_guard lock(mutex_);
        listeners_.push_back(std::move(lt));
    }
    raw->thread = std::thread([this, raw] { accept_loop(*raw); });
    return {error_code{}, port};
}

void baseline_runner::accept_loop(listener_thread& l) {
    while (!stopping_.load()) {
        const int fd = ::accept4(l.fd, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd < 0) {
            if (stopping_.load() || errno == EINVAL || errno == EBADF) {
                break;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(10)); // EMFILE and the like
            continue;
        }
        const auto admission = pool_.register_source({buffers_per_source_, buffers_per_source_});
        if (!admission.admitted()) {
            ::close(fd);
            continue;
        }
        auto s = std::make_unique<source_thread>();
        s->options.name = l.options.name + "#" + std::to_string(connections_.fetch_add(1) + 1);
        s->kind = source_kind::file; // a blocking fd read loop, like a file
        s->fd = fd;
        s->pool_id = admission.id;
        s->origin = handles_.fetch_add(1);
        s->channel = processing_.open_channel(s->origin);
        auto* raw = s.get();
        const std::lock_guard lock(mutex_);
        sources_.push_back(std::move(s));
        raw->thread = std::thread([this, raw] { run(*raw); });
    }
}

void baseline_runner::shutdown() {
    {
        // Under the mutex so that no napping thread misses the wake-up.
        const std::lock_guard lock(stop_mutex_);
        if (stopping_.exchange(true)) {
            return;
        }
    }
    stop_cv_.notify_all();
    {
        const std::lock_guard lock(mutex_);
        for (auto& l : listeners_) {
            ::shutdown(l->fd, SHUT_RDWR); // wakes the blocked accept
        }
        for (auto& s : sources_) {
            if (s->fd >= 0) {
                ::shutdown(s->fd, SHUT_RDWR); // wakes a blocked recv (no effect on files)
            }
        }
    }
    for (auto& l : listeners_) {
        if (l->thread.joinable()) {
            l->thread.join();
        }
        ::close(l->fd);
    }
    std::vector<std::unique_ptr<source_thread>> all;
    {
        const std::lock_guard lock(mutex_);
        all = std::move(sources_);
    }
    for (auto& s : all) {
        if (s->thread.joinable()) {
            s->thread.join();
        }
        if (s->fd >= 0) {
            ::close(s->fd);
        }
        pool_.unregister_source(s->pool_id);
    }
    if (!all.empty()) {
        // No release can post to a thread's io_context after this. Only when this runner had
        // sources: in sluice mode the worker's own sources still feed processing here (they
        // stop after this), and behind a slow engine processing would never go idle.
        processing_.wait_idle();
    }
    all.clear();
}

baseline_stats baseline_runner::stats() const {
    baseline_stats b;
    {
        const std::lock_guard lock(mutex_);
        b.sources_total = sources_.size();
    }
    b.connections_total = connections_.load();
    for (std::size_t i = 0; i < flush_reason_count; ++i) {
        b.flushes_total[i] = flushes_[i].load();
    }
    return b;
}

std::size_t baseline_runner::source_count() const {
    const std::lock_guard lock(mutex_);
    return sources_.size();
}

} // namespace sluice::runtime
