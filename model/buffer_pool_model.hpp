#pragma once
/// Reference model of the buffer pool's accounting: single-threaded, no Asio, no buffers —
/// only counts and a queue, written to be obviously correct rather than fast. It is the oracle
/// the stateful property test compares `runtime::buffer_pool` against, command by command.
///
/// The rules (DESIGN.md §3, restated in `runtime/buffer_pool.hpp`):
/// - free + Σ outstanding = buffer_count;
/// - owed = Σ_registered max(0, reserve − outstanding) + max(0, processing_reserve −
/// outstanding_proc);
///   free ≥ owed; floating = free − owed;
/// - a source may take while outstanding < reserve, or while outstanding < cap and floating ≥ 1;
///   processing may take while outstanding_proc < processing_reserve, or while floating ≥ 1;
/// - after every change, repeatedly grant the first waiter (processing waiters before source
///   waiters, each in arrival order) whose condition holds;
/// - admission checks, in order: limits valid, a registry slot free, the static sum fits, and
///   at least `reserve` buffers floating now.

#include <cstdint>
#include <string>
#include <vector>

namespace sluice::model {

enum class admission { admitted, invalid_limits, registry_full, overcommitted, reserve_lent_out };

class buffer_pool_model {
public:
    /// Requester value that stands for processing; sources are 0, 1, 2, … in registration order.
    static constexpr int processing = -1;

    struct config {
        std::uint32_t buffer_count = 0;
        std::uint32_t processing_reserve = 0;
        std::uint32_t sources_max = 0;
    };

    struct registration {
        admission status = admission::invalid_limits;
        int source = -1; ///< the new source's number when admitted
    };

    struct acquisition {
        bool immediate = false;   ///< granted at once
        std::uint64_t ticket = 0; ///< the queued waiter's ticket when not immediate
    };

    struct waiter {
        std::uint64_t ticket = 0;
        int requester = processing;
    };

    explicit buffer_pool_model(config cfg);

    registration register_source(std::uint32_t reserve, std::uint32_t cap);
    /// Returns the tickets of the source's waiters, which are aborted, in arrival order.
    std::vector<std::uint64_t> unregister_source(int source);
    acquisition acquire(int requester);
    bool try_acquire(int requester);
    /// Returns the tickets granted because of this release, in grant order.
    std::vector<std::uint64_t> release(int requester);
    /// True when the ticket was queued (and is now removed).
    bool cancel(std::uint64_t ticket);

    std::uint32_t free() const { return free_; }
    std::uint32_t owed() const;
    std::uint32_t floating() const { return free_ - owed(); }
    std::uint32_t outstanding(int requester) const;
    std::uint32_t waiter_count(int requester) const;
    std::uint32_t reserved_total() const;
    bool registered(int source) const {
        return sources_.at(index(source)).state == lifecycle::registered;
    }
    bool retiring(int source) const {
        return sources_.at(index(source)).state == lifecycle::retiring;
    }
    int source_count() const { return static_cast<int>(sources_.size()); }
    const std::vector<waiter>& queue() const { return queue_; }
    const config& configuration() const { return config_; }

    /// Empty when conservation and the reserve invariant hold; otherwise what is broken.
    std::string violation() const;

private:
    enum class lifecycle { registered, retiring, gone };
    static std::size_t index(int source) { return static_cast<std::size_t>(source); }
    bool may_take(int requester) const;
    void take(int requester);
    std::vector<std::uint64_t> grant_eligible();

    struct source_record {
        std::uint32_t reserve = 0;
        std::uint32_t cap = 0;
        std::uint32_t outstanding = 0;
        lifecycle state = lifecycle::registered;
    };

    config config_;
    std::uint32_t free_ = 0;
    std::uint32_t outstanding_processing_ = 0;
    std::uint64_t next_ticket_ = 0;
    std::vector<source_record> sources_;
    std::vector<waiter> queue_; ///< arrival order
};

} // namespace sluice::model
