#pragma once
/// Reference model of the buffer pool's accounting: single-threaded, no Asio, no buffers —
/// only counts and a queue, written to be obviously correct rather than fast. It is the oracle
/// the stateful property test compares `runtime::buffer_pool` against, command by command.
///
/// The rules (DESIGN.md §3, restated in `sluice/pool/buffer_pool.hpp`):
/// - free + Σ outstanding = buffer_count;
/// - owed = Σ_registered max(0, reserve − outstanding) + max(0, processing_reserve −
/// outstanding_proc);
///   free ≥ owed; floating = free − owed;
/// - a source may take while outstanding < reserve, or while outstanding < cap and floating ≥ 1;
///   processing may take while outstanding_proc < processing_reserve, or while floating ≥ 1;
/// - after every change, repeatedly grant the first waiter (processing waiters before source
///   waiters, each in arrival order) whose condition holds;
/// - admission checks, in order: limits valid, a registry slot free, the static sum fits, and
///   at least `reserve` buffers floating now beyond what is held back;
/// - a waiting registration is refused at once for any other reason, or queued (arrival
///   order); while one is queued the first one's reserve is *held back*: a source above its
///   reserve needs floating ≥ held + 1, a plain registration floating ≥ reserve + held;
/// - after every change: processing waiters, then queued registrations (the first one leaves
///   the queue as soon as its reserve floats, or as soon as the registry or the static sum
///   refuses it), then source waiters.

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

    /// The answer to a waiting registration: at once (`queued` false), or a ticket.
    struct waiting_registration {
        registration answer;
        bool queued = false;
        std::uint64_t ticket = 0;
    };

    /// A queued registration's answer when it left the queue (admitted or refused).
    struct admission_answer {
        std::uint64_t ticket = 0;
        registration answer;
    };

    struct admission_waiter {
        std::uint64_t ticket = 0;
        std::uint32_t reserve = 0;
        std::uint32_t cap = 0;
    };

    explicit buffer_pool_model(config cfg);

    registration register_source(std::uint32_t reserve, std::uint32_t cap);
    waiting_registration register_waiting(std::uint32_t reserve, std::uint32_t cap);
    /// Registrations that left the queue during the last call, in order.
    const std::vector<admission_answer>& answered() const { return answered_; }
    /// Returns the tickets of the source's waiters, which are aborted, in arrival order.
    std::vector<std::uint64_t> unregister_source(int source);
    acquisition acquire(int requester);
    bool try_acquire(int requester);
    /// Returns the tickets granted because of this release, in grant order.
    std::vector<std::uint64_t> release(int requester);
    /// True when the ticket was queued (and is now removed).
    bool cancel(std::uint64_t ticket);
    /// Removes a queued registration; returns the buffer tickets granted because of it (what
    /// was held back for the first one is lendable again).
    std::vector<std::uint64_t> cancel_registration(std::uint64_t ticket);
    std::uint32_t held() const { return admissions_.empty() ? 0 : admissions_.front().reserve; }
    const std::vector<admission_waiter>& admission_queue() const { return admissions_; }

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
    registration decide(std::uint32_t reserve, std::uint32_t cap, std::uint32_t held);

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
    std::vector<waiter> queue_;                ///< arrival order
    std::vector<admission_waiter> admissions_; ///< queued registrations, arrival order
    std::vector<admission_answer> answered_;   ///< see answered()
};

} // namespace sluice::model
