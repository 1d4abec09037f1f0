#pragma once
/// sluiced's stop signals and drain deadline: SIGINT/SIGTERM ask for a drain, a second one ends
/// the process at once; only the main thread takes them; a drain that passes its deadline ends
/// the process with its own exit code.

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

/// Blocks (SIG_BLOCK) or unblocks (SIG_UNBLOCK) SIGINT, SIGTERM and SIGHUP in the calling thread;
/// threads inherit the mask of the thread that creates them. main blocks them while the
/// worker and the metrics endpoint start their threads and unblocks them in itself
/// afterwards, so only the main thread ever takes a stop signal. A signal sent meanwhile stays
/// pending and is taken at the unblock. (A signal taken by a thread sitting in a raw futex
/// wait, as oneTBB's idle workers do, is run late under ThreadSanitizer, which defers handlers
/// to the thread's next intercepted call.)
void mask_stop_signals(int how);
/// Installed before anything starts, so a signal during start-up drains too (and a SIGHUP
/// then does not kill the process).
void install_stop_signals();

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
