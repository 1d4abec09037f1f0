// A lane's epoll set for sluice's own TCP streams (see lane_poller.hpp).
#include "sluice/env/production/lane_poller.hpp"

#include <sys/epoll.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <system_error>

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/post.hpp>

namespace sluice::runtime::detail {

namespace {

/// Events read per epoll_wait, and rounds of them per handler: a lane with more ready streams
/// than this lets its other handlers run and goes on in a posted pass.
constexpr int events_per_round = 64;
constexpr int rounds_per_pass = 4;

int new_epoll() {
    const int fd = ::epoll_create1(EPOLL_CLOEXEC);
    if (fd < 0) {
        throw std::system_error(errno, std::generic_category(),
                                "epoll_create1 for a lane's TCP streams");
    }
    return fd;
}

std::uint64_t event_key(std::uint32_t slot, std::uint32_t generation) noexcept {
    return (static_cast<std::uint64_t>(generation) << 32) | slot;
}

} // namespace

lane_poller::lane_poller(asio::io_context& context)
    : asio::execution_context::service(context), epoll_fd_(new_epoll()),
      descriptor_(context, epoll_fd_) {}

lane_poller::~lane_poller() = default; // the descriptor closes the epoll set

void lane_poller::shutdown() {
    error_code ignored;
    descriptor_.close(ignored);
    epoll_fd_ = -1; // its number may be reused: remove() must not touch it
}

lane_poller& lane_poller::of(const lane_executor_type& lane) {
    auto& poller = asio::use_service<lane_poller>(asio::query(lane, asio::execution::context));
    // Every lane executor of one io_context counts into the same counters: any of them will do.
    std::call_once(poller.lane_once_, [&] { poller.lane_.emplace(lane); });
    return poller;
}

namespace {
epoll_event watched(std::uint64_t data) noexcept {
    epoll_event event{};
    event.events = EPOLLIN | EPOLLRDHUP | EPOLLET;
    event.data.u64 = data;
    return event;
}
} // namespace

std::pair<error_code, std::uint32_t> lane_poller::add(int fd, polled& target) {
    std::uint32_t slot = 0;
    if (free_slots_.empty()) {
        slots_.emplace_back();
        slot = static_cast<std::uint32_t>(slots_.size() - 1);
    } else {
        slot = free_slots_.back();
        free_slots_.pop_back();
    }
    epoll_event event = watched(event_key(slot, slots_[slot].generation));
    if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &event) != 0) {
        const error_code error(errno, boost::system::system_category());
        free_slots_.push_back(slot);
        return {error, 0};
    }
    slots_[slot].target = &target;
    return {error_code{}, slot};
}

error_code lane_poller::rearm(std::uint32_t slot, int fd) noexcept {
    epoll_event event = watched(event_key(slot, slots_[slot].generation));
    if (::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, fd, &event) != 0) {
        return {errno, boost::system::system_category()};
    }
    return {};
}

void lane_poller::remove(std::uint32_t slot, int fd) noexcept {
    if (epoll_fd_ >= 0) {
        ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr); // best effort: close removes it too
    }
    slots_[slot].target = nullptr;
    ++slots_[slot].generation; // events already read for the old stream no longer match
    free_slots_.push_back(slot);
}

void lane_poller::waiting() {
    ++waiting_;
    arm();
}

void lane_poller::stopped_waiting() noexcept {
    SLUICE_ASSERT(waiting_ > 0);
    --waiting_;
}

void lane_poller::arm() {
    if (armed_ || in_pass_ || waiting_ == 0 || !descriptor_.is_open()) {
        return;
    }
    armed_ = true;
    // Asio re-arms the epoll descriptor's registration for every wait (EPOLL_CTL_MOD), which
    // reports readiness already there: streams that became ready before this wait are not
    // missed, and no stream's callback runs inside the caller's wait.
    descriptor_.async_wait(asio::posix::stream_descriptor::wait_read,
                           asio::bind_executor(*lane_, [this](const error_code& error) {
                               armed_ = false;
                               if (!error) {
                                   pass();
                               }
                           }));
}

void lane_poller::pass() {
    if (in_pass_) {
        return;
    }
    // Reset on the way out, also when a callback throws (the exception leaves the lane's handler
    // as any handler's does).
    struct in_pass {
        bool& flag;
        explicit in_pass(bool& f) : flag(f) { flag = true; }
        ~in_pass() { flag = false; }
        in_pass(const in_pass&) = delete;
        in_pass& operator=(const in_pass&) = delete;
    };
    std::array<epoll_event, events_per_round> events{};
    int n = 0;
    {
        const in_pass scope(in_pass_);
        for (int round = 0; round < rounds_per_pass; ++round) {
            n = ::epoll_wait(epoll_fd_, events.data(), events_per_round, 0);
            for (int i = 0; i < n; ++i) {
                const std::uint64_t tag = events[static_cast<std::size_t>(i)].data.u64;
                const auto slot = static_cast<std::uint32_t>(tag & 0xffffffffU);
                const auto generation = static_cast<std::uint32_t>(tag >> 32);
                // Looked up each time: a callback may add (and grow the table) or remove streams.
                if (slot < slots_.size() && slots_[slot].generation == generation &&
                    slots_[slot].target != nullptr) {
                    slots_[slot].target->on_ready();
                }
            }
            if (n < events_per_round) {
                break;
            }
        }
    }
    if (n == events_per_round && !pass_posted_) {
        // Still more ready: the lane's other handlers first, then another pass.
        pass_posted_ = true;
        asio::post(*lane_, [this] {
            pass_posted_ = false;
            pass();
        });
        return;
    }
    arm();
}

} // namespace sluice::runtime::detail
