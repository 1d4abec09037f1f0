// The server's shutdown gate: what it admits once closed, and that closing waits for the last
// piece of work inside.

#include <atomic>
#include <chrono>
#include <thread>

#include <gtest/gtest.h>

#include "sluice/core/gate.hpp"

namespace {

using sluice::runtime::gate;

TEST(gate, a_closed_gate_admits_only_work_handed_on_from_inside) {
    gate g;
    EXPECT_TRUE(g.try_enter());
    EXPECT_TRUE(g.close());
    EXPECT_FALSE(g.close()) << "only the first close closes";
    EXPECT_TRUE(g.closed());
    EXPECT_FALSE(g.try_enter()) << "no new work once closed";
    EXPECT_TRUE(g.try_enter_unless_drained()) << "work is still inside: a wake-up may be needed";
    g.enter(); // handed on by the work inside
    g.leave();
    g.leave();
    EXPECT_FALSE(g.empty());
    g.leave();
    EXPECT_TRUE(g.empty());
    EXPECT_FALSE(g.try_enter_unless_drained()) << "closed and empty: nothing can need it";
}

TEST(gate, wait_empty_returns_only_after_the_last_leave) {
    gate g;
    g.enter();
    g.enter();
    std::atomic<bool> returned{false};
    std::thread closer([&] {
        g.close();
        g.wait_empty();
        returned.store(true);
    });
    g.leave();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    EXPECT_FALSE(returned.load()) << "one piece of work is still inside";
    {
        const gate::holder last(g); // a scope that entered leaves when it ends
    }
    closer.join();
    EXPECT_TRUE(returned.load());
    EXPECT_TRUE(g.empty());
}

} // namespace
