#pragma once
/// sluiced's stop signals and drain deadline: SIGINT/SIGTERM ask for a drain, a second one ends
/// the process at once; one thread of their own takes them; a drain that passes its deadline
/// ends the process with its own exit code.

#include <signal.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "sluice/env/environment.hpp"

namespace sluiced {

using sluice::runtime::duration;

inline constexpr int exit_second_signal = 4;
inline constexpr int exit_drain_timeout = 5;

/// How many stop signals arrived, and the first one's number.
extern std::atomic<int> stop_signals;
extern std::atomic<int> first_signal;
/// How many SIGHUPs arrived (the control loop answers them; the process never dies of one).
extern std::atomic<int> hangups;

/// Blocks SIGINT, SIGTERM and SIGHUP in the calling thread and starts the one thread that takes
/// them, with sigwait(3): a first stop signal asks for a drain, a second ends the process at
/// once (exit_second_signal), a SIGHUP counts in `hangups`. main calls it first, before any
/// other thread exists, so every thread inherits the mask and no thread ever runs a handler for
/// them. (With handlers, the kernel could hand a signal to any thread without the mask, and
/// under ThreadSanitizer a handler taken by a thread parked in a raw futex wait, as oneTBB's
/// idle workers are, runs only when that thread wakes: a SIGHUP went unanswered for 30 s.)
/// A signal sent during start-up waits for the control loop like any other.
void start_signal_thread();

/// Ends the process with exit_drain_timeout unless `done()` is called within `deadline`: a
/// drain that hangs (a source stuck in a system call) cannot keep the worker up forever.
class drain_deadline {
public:
    explicit drain_deadline(duration deadline);
    drain_deadline(const drain_deadline&) = delete;
    drain_deadline& operator=(const drain_deadline&) = delete;
    ~drain_deadline() { done(); }
    void done();

private:
    std::mutex mutex_;
    std::condition_variable finished_;
    bool done_ = false;
    std::thread watchdog_; ///< last: starts once the rest is constructed
};

} // namespace sluiced
