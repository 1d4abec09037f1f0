#include "apps/sluiced/stop_signals.hpp"

#include <pthread.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>

namespace sluiced {

std::atomic<int> stop_signals{0};
std::atomic<int> first_signal{0};
std::atomic<int> hangups{0};

namespace {

sigset_t stop_signal_set() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    return set;
}

/// Runs for the life of the process: sigwait fails only for an invalid set.
void take_signals(sigset_t set) {
    ::pthread_setname_np(::pthread_self(), "sluiced-signals");
    int number = 0;
    while (::sigwait(&set, &number) == 0) {
        if (number == SIGHUP) {
            hangups.fetch_add(1);
            continue;
        }
        if (stop_signals.fetch_add(1) == 0) {
            first_signal.store(number);
            continue;
        }
        constexpr char message[] = "\nsluiced: second signal: exiting now, without draining\n";
        [[maybe_unused]] const auto written = ::write(STDERR_FILENO, message, sizeof message - 1);
        ::_exit(exit_second_signal);
    }
    std::fprintf(stderr, "sluiced: sigwait failed; stop signals are no longer answered\n");
}

} // namespace

void start_signal_thread() {
    const sigset_t set = stop_signal_set();
    ::pthread_sigmask(SIG_BLOCK, &set, nullptr);
    std::thread(take_signals, set).detach();
}

drain_deadline::drain_deadline(duration deadline)
    : watchdog_([this, deadline] {
          std::unique_lock lock(mutex_);
          if (!finished_.wait_for(lock, deadline, [this] { return done_; })) {
              std::fprintf(
                  stderr,
                  "sluiced: the drain did not finish within worker.drain_timeout_ms "
                  "= %lld; exiting without it\n",
                  static_cast<long long>(
                      std::chrono::duration_cast<std::chrono::milliseconds>(deadline).count()));
              std::fflush(stderr);
              ::_exit(exit_drain_timeout);
          }
      }) {}

void drain_deadline::done() {
    {
        const std::lock_guard lock(mutex_);
        done_ = true;
    }
    finished_.notify_all();
    if (watchdog_.joinable()) {
        watchdog_.join();
    }
}

} // namespace sluiced
