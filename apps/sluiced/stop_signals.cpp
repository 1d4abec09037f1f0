#include "apps/sluiced/stop_signals.hpp"

#include <unistd.h>

#include <chrono>
#include <cstdio>

namespace sluiced {

std::atomic<int> stop_signals{0};
std::atomic<int> first_signal{0};
std::atomic<int> hangups{0};

namespace {

void on_stop_signal(int number) {
    if (stop_signals.fetch_add(1) == 0) {
        first_signal.store(number);
        return;
    }
    // Async-signal-safe: write(2) and _exit(2) only.
    constexpr char message[] = "\nsluiced: second signal: exiting now, without draining\n";
    [[maybe_unused]] const auto written = ::write(STDERR_FILENO, message, sizeof message - 1);
    ::_exit(exit_second_signal);
}

void on_hangup(int /*number*/) {
    hangups.fetch_add(1);
}

} // namespace

void mask_stop_signals(int how) {
    sigset_t stops;
    sigemptyset(&stops);
    sigaddset(&stops, SIGINT);
    sigaddset(&stops, SIGTERM);
    sigaddset(&stops, SIGHUP);
    ::pthread_sigmask(how, &stops, nullptr);
}

void install_stop_signals() {
    struct sigaction action {};
    action.sa_handler = on_stop_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;
    ::sigaction(SIGINT, &action, nullptr);
    ::sigaction(SIGTERM, &action, nullptr);
    struct sigaction hangup {};
    hangup.sa_handler = on_hangup;
    sigemptyset(&hangup.sa_mask);
    hangup.sa_flags = SA_RESTART;
    ::sigaction(SIGHUP, &hangup, nullptr);
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
