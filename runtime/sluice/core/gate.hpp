#pragma once
/// A gate, as Seastar names it: counts the pieces of work that a shutdown must wait for, and
/// once closed admits no new ones. The source server holds one: every running source (in a
/// coroutine, a step or parked), every accept loop, armed flush sweeper, waiting registration
/// and posted wake-up is inside it from the moment it is scheduled until its last touch of the
/// server.

#include <condition_variable>
#include <cstddef>
#include <mutex>

#include "sluice/core/assert.hpp"

namespace sluice::runtime {

class gate {
public:
    gate() = default;
    gate(const gate&) = delete;
    gate& operator=(const gate&) = delete;
    /// Requires nothing inside (programmer error otherwise).
    ~gate() { SLUICE_ASSERT(inside_ == 0); }

    /// Enters unless the gate is closed. Any thread.
    bool try_enter() {
        const std::lock_guard lock(mutex_);
        if (closed_) {
            return false;
        }
        ++inside_;
        return true;
    }
    /// Enters even when closed: for work that something already inside the gate hands on (a run
    /// that ends and posts its last step, a stop of a running source), which the closing side
    /// must wait for too.
    void enter() {
        const std::lock_guard lock(mutex_);
        ++inside_;
    }
    /// Enters unless the gate is closed and empty: while a closed gate still holds work, that
    /// work may need this piece (a flush wake-up that lets a stopping source finish).
    bool try_enter_unless_drained() {
        const std::lock_guard lock(mutex_);
        if (closed_ && inside_ == 0) {
            return false;
        }
        ++inside_;
        return true;
    }
    /// Leaves; the last one out wakes wait_empty.
    void leave() {
        const std::lock_guard lock(mutex_);
        SLUICE_ASSERT(inside_ > 0);
        if (--inside_ == 0) {
            emptied_.notify_all();
        }
    }

    /// Closes the gate: try_enter fails from now on. True for the call that closed it.
    bool close() {
        const std::lock_guard lock(mutex_);
        const bool was_open = !closed_;
        closed_ = true;
        return was_open;
    }
    bool closed() const {
        const std::lock_guard lock(mutex_);
        return closed_;
    }
    /// Blocks until nothing is inside. Not from inside the gate.
    void wait_empty() {
        std::unique_lock lock(mutex_);
        emptied_.wait(lock, [this] { return inside_ == 0; });
    }
    bool empty() const {
        const std::lock_guard lock(mutex_);
        return inside_ == 0;
    }

    /// Leaves the gate when destroyed: for a scope that entered (also when it throws).
    class holder {
    public:
        explicit holder(gate& g) noexcept : gate_(&g) {}
        holder(const holder&) = delete;
        holder& operator=(const holder&) = delete;
        ~holder() { gate_->leave(); }

    private:
        gate* gate_;
    };

private:
    mutable std::mutex mutex_;
    std::condition_variable emptied_;
    std::size_t inside_ = 0; ///< work entered and not yet left
    bool closed_ = false;    ///< set once by close(); try_enter refuses from then on
};

} // namespace sluice::runtime
