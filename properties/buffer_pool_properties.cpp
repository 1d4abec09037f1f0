/// Properties of the buffer pool (DESIGN.md §5, properties 1, 2 and 7):
/// - a stateful test drives the real `runtime::buffer_pool` and the reference model
///   `model::buffer_pool_model` with the same random commands and compares every observable
///   after each one: admission answers, who is woken and in what order, free and floating
///   counts, per-source outstanding buffers and waiters, conservation and the reserve invariant;
/// - the seed's P2 example: 100 buffers, sources asking 5 each.

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <vector>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/io_context.hpp>
#include <gtest/gtest.h>
#include <rapidcheck.h>
#include <rapidcheck/gtest.h>
#include <rapidcheck/state.h>

#include "model/buffer_pool_model.hpp"
#include "sluice/pool/buffer_pool.hpp"

namespace {

namespace asio = boost::asio;
using sluice::model::buffer_pool_model;
using sluice::runtime::admission_status;
using sluice::runtime::buffer;
using sluice::runtime::buffer_pool;

constexpr int processing = buffer_pool_model::processing;
constexpr std::uint64_t immediate_tag = ~std::uint64_t{0};

admission_status to_runtime(sluice::model::admission status) {
    switch (status) {
    case sluice::model::admission::admitted:
        return admission_status::admitted;
    case sluice::model::admission::invalid_limits:
        return admission_status::invalid_limits;
    case sluice::model::admission::registry_full:
        return admission_status::registry_full;
    case sluice::model::admission::overcommitted:
        return admission_status::overcommitted;
    case sluice::model::admission::reserve_lent_out:
        return admission_status::reserve_lent_out;
    }
    return admission_status::invalid_limits;
}

/// The system under test: the real pool on a single-threaded io_context that the test polls,
/// so every posted completion is observed in the order the pool posted it.
struct pool_sut {
    struct completion {
        std::uint64_t tag = 0;
        boost::system::error_code error;
        buffer granted;
    };
    struct answer {
        std::uint64_t tag = 0;
        boost::system::error_code error;
        sluice::runtime::admission admission;
    };

    explicit pool_sut(const buffer_pool_model::config& cfg)
        : pool(sluice::runtime::pool_config{cfg.buffer_count, 64, cfg.processing_reserve,
                                            cfg.sources_max}) {}

    pool_sut(const pool_sut&) = delete;
    pool_sut& operator=(const pool_sut&) = delete;

    ~pool_sut() {
        // Take everything back so the pool's destructor finds it whole.
        for (auto& [ticket, signal] : signals) {
            signal->emit(asio::cancellation_type::terminal);
        }
        for (auto& [ticket, signal] : registration_signals) {
            signal->emit(asio::cancellation_type::terminal);
        }
        poll();
        for (auto& a : answers) {
            if (a.admission.admitted()) {
                ids.push_back(a.admission.id);
                registered.push_back(true);
            }
        }
        answers.clear();
        for (std::size_t i = 0; i < ids.size(); ++i) {
            if (registered[i]) {
                pool.unregister_source(ids[i]);
            }
        }
        poll();
        completions.clear();
        held.clear();
        poll();
        completions.clear();
    }

    void poll() {
        io.restart();
        io.poll();
    }

    /// Runs what the pool posted and returns the completions in the order they ran.
    std::vector<completion> take_completions() {
        poll();
        return std::exchange(completions, {});
    }

    /// Starts an asynchronous acquisition tagged with the model's ticket (or immediate_tag).
    void start_acquire(int requester, std::uint64_t tag) {
        auto signal = std::make_unique<asio::cancellation_signal>();
        auto handler = asio::bind_cancellation_slot(
            signal->slot(),
            asio::bind_executor(io, [this, tag](boost::system::error_code error, buffer b) {
                completions.push_back(completion{tag, error, std::move(b)});
            }));
        if (requester == processing) {
            pool.async_acquire_processing(std::move(handler));
        } else {
            pool.async_acquire(ids[static_cast<std::size_t>(requester)], std::move(handler));
        }
        if (tag != immediate_tag) {
            signals.emplace(tag, std::move(signal));
            owner_of.emplace(tag, requester);
        } else {
            immediate_signal = std::move(signal);
        }
    }

    /// Starts a waiting registration tagged with the model's ticket (or immediate_tag).
    void start_register(std::uint32_t reserve, std::uint32_t cap, std::uint64_t tag) {
        auto signal = std::make_unique<asio::cancellation_signal>();
        pool.async_register_source(
            {reserve, cap},
            asio::bind_cancellation_slot(
                signal->slot(), asio::bind_executor(io, [this, tag](boost::system::error_code error,
                                                                    sluice::runtime::admission a) {
                    answers.push_back(answer{tag, error, std::move(a)});
                })));
        if (tag != immediate_tag) {
            registration_signals.emplace(tag, std::move(signal));
        } else {
            immediate_signal = std::move(signal);
        }
    }

    /// Moves granted buffers to their holders and forgets completed tickets.
    void absorb(std::vector<completion>& done) {
        for (auto& c : done) {
            const int owner = c.tag == immediate_tag ? immediate_owner : owner_of.at(c.tag);
            if (c.granted) {
                held[owner].push_back(std::move(c.granted));
            }
            signals.erase(c.tag);
            owner_of.erase(c.tag);
        }
    }

    buffer_pool pool;
    asio::io_context io;
    std::vector<sluice::runtime::source_id> ids; ///< model source number → real id
    std::vector<bool> registered;                ///< by model source number
    std::map<int, std::vector<buffer>> held;     ///< requester → handles it holds
    std::map<std::uint64_t, std::unique_ptr<asio::cancellation_signal>> signals; ///< queued
    std::map<std::uint64_t, int> owner_of; ///< queued ticket → requester
    std::map<std::uint64_t, std::unique_ptr<asio::cancellation_signal>> registration_signals;
    std::vector<answer> answers; ///< completed waiting registrations, in the order they ran
    std::unique_ptr<asio::cancellation_signal> immediate_signal;
    int immediate_owner = processing;
    std::vector<completion> completions;
};

using command = rc::state::Command<buffer_pool_model, pool_sut>;

/// Compares every observable of the pool with the model after a command.
void compare(const buffer_pool_model& m, pool_sut& sut) {
    const auto stats = sut.pool.stats();
    RC_ASSERT(stats.free == m.free());
    RC_ASSERT(stats.owed == m.owed());
    RC_ASSERT(stats.floating == m.floating());
    RC_ASSERT(stats.reserved_sources == m.reserved_total());
    RC_ASSERT(stats.outstanding_processing == m.outstanding(processing));
    RC_ASSERT(stats.waiters_processing == m.waiter_count(processing));
    RC_ASSERT(sut.held[processing].size() == m.outstanding(processing));
    std::uint32_t source_waiters = 0;
    std::uint32_t registered = 0;
    std::uint32_t retiring = 0;
    for (int i = 0; i < m.source_count(); ++i) {
        const auto id = sut.ids[static_cast<std::size_t>(i)];
        RC_ASSERT(sut.pool.outstanding(id) == m.outstanding(i));
        RC_ASSERT(sut.pool.waiters(id) == m.waiter_count(i));
        RC_ASSERT(sut.held[i].size() == m.outstanding(i));
        RC_ASSERT(bool(sut.registered[static_cast<std::size_t>(i)]) == m.registered(i));
        source_waiters += m.waiter_count(i);
        registered += m.registered(i) ? 1U : 0U;
        retiring += m.retiring(i) ? 1U : 0U;
    }
    RC_ASSERT(stats.waiters_sources == source_waiters);
    RC_ASSERT(stats.sources_registered == registered);
    RC_ASSERT(stats.sources_retiring == retiring);
    // Every queued waiter of the model is pending in the pool, and nothing else is.
    std::set<std::uint64_t> model_queue;
    for (const auto& w : m.queue()) {
        model_queue.insert(w.ticket);
    }
    std::set<std::uint64_t> pending;
    for (const auto& [ticket, signal] : sut.signals) {
        pending.insert(ticket);
    }
    RC_ASSERT(model_queue == pending);
    RC_ASSERT(stats.waiters_admission == m.admission_queue().size());
    RC_ASSERT(stats.held_for_admission == m.held());
    std::set<std::uint64_t> model_registrations;
    for (const auto& w : m.admission_queue()) {
        model_registrations.insert(w.ticket);
    }
    std::set<std::uint64_t> pending_registrations;
    for (const auto& [ticket, signal] : sut.registration_signals) {
        pending_registrations.insert(ticket);
    }
    RC_ASSERT(model_registrations == pending_registrations);
    // Every held buffer is distinct: no buffer has two owners.
    std::set<std::uint32_t> indices;
    std::size_t handles = 0;
    for (const auto& [owner, buffers] : sut.held) {
        for (const auto& b : buffers) {
            indices.insert(b.index());
            ++handles;
        }
    }
    RC_ASSERT(indices.size() == handles);
    RC_ASSERT(m.violation().empty());
    sut.pool.check_invariants();
}

/// Checks that completions are exactly the expected tickets, in order, with the expected error.
void expect_completions(const std::vector<pool_sut::completion>& done,
                        const std::vector<std::uint64_t>& tickets, std::size_t aborted_count) {
    RC_ASSERT(done.size() == tickets.size());
    for (std::size_t i = 0; i < done.size(); ++i) {
        RC_ASSERT(done[i].tag == tickets[i]);
        if (i < aborted_count) {
            RC_ASSERT(done[i].error == asio::error::operation_aborted);
            RC_ASSERT(!done[i].granted);
        } else {
            RC_ASSERT(!done[i].error);
            RC_ASSERT(bool(done[i].granted));
        }
    }
}

/// Checks the registrations that left the queue (their answers ran in the pool's order, which
/// is the model's) and records the admitted ones as the model numbers them.
void expect_answers(const buffer_pool_model& m, pool_sut& sut) {
    const auto& expected = m.answered();
    RC_ASSERT(sut.answers.size() == expected.size());
    for (std::size_t i = 0; i < expected.size(); ++i) {
        const auto& got = sut.answers[i];
        RC_ASSERT(got.tag == expected[i].ticket);
        RC_ASSERT(!got.error);
        RC_ASSERT(got.admission.status == to_runtime(expected[i].answer.status));
        RC_ASSERT(got.admission.admitted() == got.admission.message.empty());
        if (got.admission.admitted()) {
            RC_ASSERT(expected[i].answer.source == static_cast<int>(sut.ids.size()));
            sut.ids.push_back(got.admission.id);
            sut.registered.push_back(true);
        }
        sut.registration_signals.erase(got.tag);
    }
    sut.answers.clear();
}

int pick_requester(const buffer_pool_model& m) {
    std::vector<int> choices{processing};
    for (int i = 0; i < m.source_count(); ++i) {
        if (m.registered(i)) {
            choices.push_back(i);
        }
    }
    return *rc::gen::elementOf(choices);
}

struct register_source final : command {
    std::uint32_t reserve = *rc::gen::inRange<std::uint32_t>(0, 5);
    std::uint32_t cap =
        *rc::gen::inRange<std::uint32_t>(reserve == 0 ? 0 : reserve - 1, reserve + 5);

    void apply(buffer_pool_model& m) const override { m.register_source(reserve, cap); }
    void run(const buffer_pool_model& m0, pool_sut& sut) const override {
        auto m = m0;
        const auto expected = m.register_source(reserve, cap);
        const auto answer = sut.pool.register_source({reserve, cap});
        RC_ASSERT(answer.status == to_runtime(expected.status));
        RC_ASSERT(answer.admitted() == answer.message.empty());
        RC_ASSERT(answer.admitted() == answer.id.valid());
        if (answer.admitted()) {
            RC_ASSERT(expected.source == static_cast<int>(sut.ids.size()));
            sut.ids.push_back(answer.id);
            sut.registered.push_back(true);
            const auto limits = sut.pool.limits(answer.id);
            RC_ASSERT(limits.reserve == reserve);
            RC_ASSERT(limits.cap == cap);
        }
        compare(m, sut);
    }
    void show(std::ostream& os) const override {
        os << "register(reserve=" << reserve << ", cap=" << cap << ")";
    }
};

struct register_waiting final : command {
    std::uint32_t reserve = *rc::gen::inRange<std::uint32_t>(0, 5);
    std::uint32_t cap =
        *rc::gen::inRange<std::uint32_t>(reserve == 0 ? 0 : reserve - 1, reserve + 5);

    void apply(buffer_pool_model& m) const override { m.register_waiting(reserve, cap); }
    void run(const buffer_pool_model& m0, pool_sut& sut) const override {
        auto m = m0;
        const auto expected = m.register_waiting(reserve, cap);
        sut.start_register(reserve, cap, expected.queued ? expected.ticket : immediate_tag);
        sut.poll();
        if (expected.queued) {
            RC_ASSERT(sut.answers.empty()); // waits, not answered
        } else {
            RC_ASSERT(sut.answers.size() == 1U);
            const auto got = std::move(sut.answers.front());
            sut.answers.clear();
            RC_ASSERT(got.tag == immediate_tag);
            RC_ASSERT(!got.error);
            RC_ASSERT(got.admission.status == to_runtime(expected.answer.status));
            if (got.admission.admitted()) {
                RC_ASSERT(expected.answer.source == static_cast<int>(sut.ids.size()));
                sut.ids.push_back(got.admission.id);
                sut.registered.push_back(true);
            }
        }
        compare(m, sut);
    }
    void show(std::ostream& os) const override {
        os << "register_waiting(reserve=" << reserve << ", cap=" << cap << ")";
    }
};

struct cancel_registration final : command {
    std::uint64_t ticket = 0;
    bool any = false;
    explicit cancel_registration(const buffer_pool_model& m) {
        if (!m.admission_queue().empty()) {
            any = true;
            ticket = (*rc::gen::elementOf(m.admission_queue())).ticket;
        }
    }
    void checkPreconditions(const buffer_pool_model& m) const override {
        const auto& queue = m.admission_queue();
        const bool queued = any && std::any_of(queue.begin(), queue.end(),
                                               [&](const auto& w) { return w.ticket == ticket; });
        RC_PRE(queued);
    }
    void apply(buffer_pool_model& m) const override { m.cancel_registration(ticket); }
    void run(const buffer_pool_model& m0, pool_sut& sut) const override {
        auto m = m0;
        const auto tickets = m.cancel_registration(ticket);
        sut.registration_signals.at(ticket)->emit(asio::cancellation_type::terminal);
        auto done = sut.take_completions();
        // The cancelled one answers first, with operation_aborted and the refusal of now.
        RC_ASSERT(!sut.answers.empty());
        const auto got = std::move(sut.answers.front());
        sut.answers.erase(sut.answers.begin());
        RC_ASSERT(got.tag == ticket);
        RC_ASSERT(got.error == asio::error::operation_aborted);
        RC_ASSERT(!got.admission.admitted());
        RC_ASSERT(!got.admission.message.empty());
        sut.registration_signals.erase(ticket);
        expect_completions(done, tickets, 0);
        sut.absorb(done);
        expect_answers(m, sut);
        compare(m, sut);
    }
    void show(std::ostream& os) const override {
        os << "cancel_registration(ticket=" << ticket << ")";
    }
};

struct unregister_source final : command {
    int source;
    explicit unregister_source(const buffer_pool_model& m) {
        std::vector<int> choices;
        for (int i = 0; i < m.source_count(); ++i) {
            if (m.registered(i)) {
                choices.push_back(i);
            }
        }
        source = choices.empty() ? -1 : *rc::gen::elementOf(choices);
    }
    void checkPreconditions(const buffer_pool_model& m) const override {
        // RapidCheck's assertion macros capture operands: `&&` and `||` inside them do not
        // short-circuit, so conditions are computed first.
        const bool valid = source >= 0 && source < m.source_count() && m.registered(source);
        RC_PRE(valid);
    }
    void apply(buffer_pool_model& m) const override { m.unregister_source(source); }
    void run(const buffer_pool_model& m0, pool_sut& sut) const override {
        auto m = m0;
        const std::size_t aborted = m.waiter_count(source);
        const auto tickets = m.unregister_source(source);
        sut.pool.unregister_source(sut.ids[static_cast<std::size_t>(source)]);
        sut.registered[static_cast<std::size_t>(source)] = false;
        auto done = sut.take_completions();
        expect_completions(done, tickets, aborted);
        sut.absorb(done);
        expect_answers(m, sut);
        compare(m, sut);
    }
    void show(std::ostream& os) const override { os << "unregister(" << source << ")"; }
};

struct acquire final : command {
    int requester;
    explicit acquire(const buffer_pool_model& m) : requester(pick_requester(m)) {}
    void checkPreconditions(const buffer_pool_model& m) const override {
        const bool valid =
            requester == processing || (requester < m.source_count() && m.registered(requester));
        RC_PRE(valid);
    }
    void apply(buffer_pool_model& m) const override { m.acquire(requester); }
    void run(const buffer_pool_model& m0, pool_sut& sut) const override {
        auto m = m0;
        const auto expected = m.acquire(requester);
        const std::uint64_t tag = expected.immediate ? immediate_tag : expected.ticket;
        sut.immediate_owner = requester;
        sut.start_acquire(requester, tag);
        auto done = sut.take_completions();
        if (expected.immediate) {
            expect_completions(done, {immediate_tag}, 0);
        } else {
            RC_ASSERT(done.empty()); // suspended, not completed
        }
        sut.absorb(done);
        compare(m, sut);
    }
    void show(std::ostream& os) const override { os << "acquire(" << requester << ")"; }
};

struct try_acquire final : command {
    int requester;
    explicit try_acquire(const buffer_pool_model& m) : requester(pick_requester(m)) {}
    void checkPreconditions(const buffer_pool_model& m) const override {
        const bool valid =
            requester == processing || (requester < m.source_count() && m.registered(requester));
        RC_PRE(valid);
    }
    void apply(buffer_pool_model& m) const override { m.try_acquire(requester); }
    void run(const buffer_pool_model& m0, pool_sut& sut) const override {
        auto m = m0;
        const bool expected = m.try_acquire(requester);
        buffer b = requester == processing
                       ? sut.pool.try_acquire_processing()
                       : sut.pool.try_acquire(sut.ids[static_cast<std::size_t>(requester)]);
        RC_ASSERT(bool(b) == expected);
        if (b) {
            RC_ASSERT(b.size_bytes() == 0U);
            sut.held[requester].push_back(std::move(b));
        }
        RC_ASSERT(sut.take_completions().empty()); // try_acquire never completes anything else
        compare(m, sut);
    }
    void show(std::ostream& os) const override { os << "try_acquire(" << requester << ")"; }
};

struct release final : command {
    int requester = processing;
    std::size_t pick = *rc::gen::inRange<std::size_t>(0, 64);
    explicit release(const buffer_pool_model& m) {
        std::vector<int> choices;
        if (m.outstanding(processing) > 0) {
            choices.push_back(processing);
        }
        for (int i = 0; i < m.source_count(); ++i) {
            if (m.outstanding(i) > 0) {
                choices.push_back(i);
            }
        }
        requester = choices.empty() ? -2 : *rc::gen::elementOf(choices);
    }
    void checkPreconditions(const buffer_pool_model& m) const override {
        const bool valid =
            requester >= processing && requester < m.source_count() && m.outstanding(requester) > 0;
        RC_PRE(valid);
    }
    void apply(buffer_pool_model& m) const override { m.release(requester); }
    void run(const buffer_pool_model& m0, pool_sut& sut) const override {
        auto m = m0;
        const auto tickets = m.release(requester);
        auto& buffers = sut.held[requester];
        RC_ASSERT(!buffers.empty());
        const auto position = buffers.begin() + static_cast<std::ptrdiff_t>(pick % buffers.size());
        buffer victim = std::move(*position);
        buffers.erase(position);
        victim.reset();
        auto done = sut.take_completions();
        expect_completions(done, tickets, 0);
        sut.absorb(done);
        expect_answers(m, sut);
        compare(m, sut);
    }
    void show(std::ostream& os) const override {
        os << "release(" << requester << ", pick=" << pick << ")";
    }
};

struct cancel final : command {
    std::uint64_t ticket = 0;
    bool any = false;
    explicit cancel(const buffer_pool_model& m) {
        if (!m.queue().empty()) {
            any = true;
            ticket = (*rc::gen::elementOf(m.queue())).ticket;
        }
    }
    void checkPreconditions(const buffer_pool_model& m) const override {
        const bool queued = any && std::any_of(m.queue().begin(), m.queue().end(),
                                               [&](const auto& w) { return w.ticket == ticket; });
        RC_PRE(queued);
    }
    void apply(buffer_pool_model& m) const override { m.cancel(ticket); }
    void run(const buffer_pool_model& m0, pool_sut& sut) const override {
        auto m = m0;
        RC_ASSERT(m.cancel(ticket));
        sut.signals.at(ticket)->emit(asio::cancellation_type::terminal);
        auto done = sut.take_completions();
        expect_completions(done, {ticket}, 1);
        sut.absorb(done);
        compare(m, sut);
    }
    void show(std::ostream& os) const override { os << "cancel(ticket=" << ticket << ")"; }
};

buffer_pool_model::config gen_config() {
    const auto count = *rc::gen::inRange<std::uint32_t>(2, 25);
    const auto processing_reserve = *rc::gen::inRange<std::uint32_t>(1, std::min(count, 5U));
    const auto sources_max = *rc::gen::inRange<std::uint32_t>(1, 9);
    return {count, processing_reserve, sources_max};
}

} // namespace

RC_GTEST_PROP(buffer_pool_properties, real_pool_matches_reference_model, ()) {
    const auto cfg = gen_config();
    buffer_pool_model initial(cfg);
    pool_sut sut(cfg);
    rc::state::check(
        initial, sut,
        rc::state::gen::execOneOfWithArgs<register_source, register_source, register_waiting,
                                          unregister_source, acquire, acquire, try_acquire, release,
                                          release, release, cancel, cancel_registration>());
}

RC_GTEST_PROP(buffer_pool_properties, pool_is_whole_after_shutdown, ()) {
    // Conservation across a whole life: whatever happened, once every source is unregistered
    // and every handle released, every buffer is free and every reserve returned.
    const auto cfg = gen_config();
    std::uint32_t free_at_end = 0;
    std::uint32_t reserved_at_end = 1;
    {
        buffer_pool_model initial(cfg);
        pool_sut sut(cfg);
        rc::state::check(
            initial, sut,
            rc::state::gen::execOneOfWithArgs<register_source, register_waiting, acquire,
                                              try_acquire, release, unregister_source>());
        for (auto& [ticket, signal] : sut.signals) {
            signal->emit(asio::cancellation_type::terminal);
        }
        for (auto& [ticket, signal] : sut.registration_signals) {
            signal->emit(asio::cancellation_type::terminal);
        }
        sut.poll();
        for (auto& a : sut.answers) {
            if (a.admission.admitted()) { // admitted before its cancellation came
                sut.ids.push_back(a.admission.id);
                sut.registered.push_back(true);
            }
        }
        sut.answers.clear();
        sut.registration_signals.clear();
        for (std::size_t i = 0; i < sut.ids.size(); ++i) {
            if (sut.registered[i]) {
                sut.pool.unregister_source(sut.ids[i]);
                sut.registered[i] = false;
            }
        }
        auto done = sut.take_completions();
        sut.absorb(done);
        sut.held.clear();
        done = sut.take_completions();
        RC_ASSERT(done.empty());
        const auto stats = sut.pool.stats();
        free_at_end = stats.free;
        reserved_at_end = stats.reserved_sources;
        RC_ASSERT(stats.acquired_immediately_total[0] + stats.acquired_after_wait_total[0] +
                      stats.acquired_immediately_total[1] + stats.acquired_after_wait_total[1] ==
                  stats.released_total);
        sut.pool.check_invariants();
    }
    RC_ASSERT(free_at_end == cfg.buffer_count);
    RC_ASSERT(reserved_at_end == 0U);
}

/// The seed's example of problem P2: 100 buffers and sources asking 5 each. Under the legacy
/// policy (5 fixed buffers per source, no processing reserve) 20 sources take all 100 and
/// processing can never get one. Here admission stops before processing can be starved, and
/// every admitted source still gets its 5 however greedily the others took floating buffers.
RC_GTEST_PROP(buffer_pool_properties, p2_hundred_buffers_five_per_source_cannot_starve_anyone, ()) {
    constexpr std::uint32_t buffer_count = 100;
    constexpr std::uint32_t per_source = 5;
    const auto processing_reserve = *rc::gen::inRange<std::uint32_t>(1, 26);
    buffer_pool pool({buffer_count, 256, processing_reserve, 64});

    std::vector<sluice::runtime::source_id> admitted;
    for (int attempt = 0; attempt < 25; ++attempt) {
        const auto cap = *rc::gen::inRange<std::uint32_t>(per_source, 40);
        const auto answer = pool.register_source({per_source, cap});
        if (!answer.admitted()) {
            RC_ASSERT(answer.status == admission_status::overcommitted);
            RC_ASSERT(answer.message.find("100") != std::string::npos);
            RC_ASSERT(answer.message.find(std::to_string(processing_reserve)) != std::string::npos);
            break;
        }
        admitted.push_back(answer.id);
    }
    // Admission stops exactly where the reserves and the processing reserve fill the pool.
    RC_ASSERT(admitted.size() == (buffer_count - processing_reserve) / per_source);

    // A random subset grabs greedily up to its cap, in a random interleaving.
    const auto greedy_count = *rc::gen::inRange<std::size_t>(0, admitted.size() + 1);
    std::vector<std::vector<buffer>> held(admitted.size());
    for (int round = 0; round < 40; ++round) {
        for (std::size_t i = 0; i < greedy_count; ++i) {
            if (buffer b = pool.try_acquire(admitted[i])) {
                held[i].push_back(std::move(b));
            }
        }
    }
    pool.check_invariants();
    // Processing still gets its whole reserve…
    std::vector<buffer> processing_buffers;
    for (std::uint32_t i = 0; i < processing_reserve; ++i) {
        processing_buffers.push_back(pool.try_acquire_processing());
        RC_ASSERT(bool(processing_buffers.back()));
    }
    // …and every admitted source still gets at least its reserve, at once.
    for (std::size_t i = 0; i < admitted.size(); ++i) {
        while (held[i].size() < per_source) {
            buffer b = pool.try_acquire(admitted[i]);
            RC_ASSERT(bool(b));
            held[i].push_back(std::move(b));
        }
    }
    pool.check_invariants();
    processing_buffers.clear();
    held.clear();
    for (const auto id : admitted) {
        pool.unregister_source(id);
    }
    RC_ASSERT(pool.stats().free == buffer_count);
}
