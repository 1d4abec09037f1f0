#include "model/buffer_pool_model.hpp"

#include <algorithm>
#include <stdexcept>

namespace sluice::model {

buffer_pool_model::buffer_pool_model(config cfg) : config_(cfg), free_(cfg.buffer_count) {
    if (cfg.processing_reserve == 0 || cfg.processing_reserve >= cfg.buffer_count) {
        throw std::invalid_argument("model: processing_reserve must be in [1, buffer_count)");
    }
}

std::uint32_t buffer_pool_model::owed() const {
    std::uint32_t owed = 0;
    for (const auto& s : sources_) {
        if (s.state == lifecycle::registered && s.outstanding < s.reserve) {
            owed += s.reserve - s.outstanding;
        }
    }
    if (outstanding_processing_ < config_.processing_reserve) {
        owed += config_.processing_reserve - outstanding_processing_;
    }
    return owed;
}

std::uint32_t buffer_pool_model::reserved_total() const {
    std::uint32_t total = 0;
    for (const auto& s : sources_) {
        if (s.state != lifecycle::gone) {
            total += s.reserve;
        }
    }
    return total;
}

std::uint32_t buffer_pool_model::outstanding(int requester) const {
    if (requester == processing) {
        return outstanding_processing_;
    }
    return sources_.at(index(requester)).outstanding;
}

std::uint32_t buffer_pool_model::waiter_count(int requester) const {
    return static_cast<std::uint32_t>(std::count_if(
        queue_.begin(), queue_.end(), [&](const waiter& w) { return w.requester == requester; }));
}

buffer_pool_model::registration buffer_pool_model::register_source(std::uint32_t reserve,
                                                                   std::uint32_t cap) {
    answered_.clear();
    return decide(reserve, cap, held());
}

buffer_pool_model::waiting_registration buffer_pool_model::register_waiting(std::uint32_t reserve,
                                                                            std::uint32_t cap) {
    answered_.clear();
    const auto answer = decide(reserve, cap, held());
    if (answer.status != admission::reserve_lent_out) {
        return {answer, false, 0};
    }
    const std::uint64_t ticket = next_ticket_++;
    admissions_.push_back(admission_waiter{ticket, reserve, cap});
    return {answer, true, ticket};
}

std::vector<std::uint64_t> buffer_pool_model::cancel_registration(std::uint64_t ticket) {
    answered_.clear();
    const auto it = std::find_if(admissions_.begin(), admissions_.end(),
                                 [&](const admission_waiter& w) { return w.ticket == ticket; });
    if (it == admissions_.end()) {
        throw std::logic_error("model: cancel of a registration that is not queued");
    }
    admissions_.erase(it);
    return grant_eligible();
}

buffer_pool_model::registration buffer_pool_model::decide(std::uint32_t reserve, std::uint32_t cap,
                                                          std::uint32_t held) {
    std::uint32_t in_use = 0;
    for (const auto& s : sources_) {
        in_use += s.state != lifecycle::gone ? 1 : 0;
    }
    if (reserve == 0 || cap < reserve) {
        return {admission::invalid_limits, -1};
    }
    if (in_use >= config_.sources_max) {
        return {admission::registry_full, -1};
    }
    if (std::uint64_t{reserved_total()} + reserve + config_.processing_reserve >
        config_.buffer_count) {
        return {admission::overcommitted, -1};
    }
    if (std::uint64_t{floating()} < std::uint64_t{reserve} + held) {
        return {admission::reserve_lent_out, -1};
    }
    sources_.push_back(source_record{reserve, cap, 0, lifecycle::registered});
    return {admission::admitted, static_cast<int>(sources_.size()) - 1};
}

std::vector<std::uint64_t> buffer_pool_model::unregister_source(int source) {
    answered_.clear();
    auto& s = sources_.at(index(source));
    if (s.state != lifecycle::registered) {
        throw std::logic_error("model: unregister of a source that is not registered");
    }
    std::vector<std::uint64_t> aborted;
    for (const auto& w : queue_) {
        if (w.requester == source) {
            aborted.push_back(w.ticket);
        }
    }
    std::erase_if(queue_, [&](const waiter& w) { return w.requester == source; });
    s.state = s.outstanding == 0 ? lifecycle::gone : lifecycle::retiring;
    // Granting after unregistration can only follow from the dropped owed reserve; the test
    // compares those grants too, so they are returned after the aborted tickets.
    const auto granted = grant_eligible();
    aborted.insert(aborted.end(), granted.begin(), granted.end());
    return aborted;
}

bool buffer_pool_model::may_take(int requester) const {
    if (requester == processing) {
        return outstanding_processing_ < config_.processing_reserve || floating() >= 1;
    }
    const auto& s = sources_.at(index(requester));
    if (s.state != lifecycle::registered) {
        return false;
    }
    return s.outstanding < s.reserve || (s.outstanding < s.cap && floating() >= held() + 1);
}

void buffer_pool_model::take(int requester) {
    --free_;
    if (requester == processing) {
        ++outstanding_processing_;
    } else {
        ++sources_.at(index(requester)).outstanding;
    }
}

std::vector<std::uint64_t> buffer_pool_model::grant_eligible() {
    std::vector<std::uint64_t> granted;
    for (;;) {
        auto first = queue_.end();
        for (auto it = queue_.begin(); it != queue_.end() && first == queue_.end(); ++it) {
            if (it->requester == processing && may_take(processing)) {
                first = it;
            }
        }
        if (first == queue_.end() && !admissions_.empty()) {
            const auto head = admissions_.front();
            const auto answer = decide(head.reserve, head.cap, 0);
            if (answer.status != admission::reserve_lent_out) {
                admissions_.erase(admissions_.begin());
                answered_.push_back(admission_answer{head.ticket, answer});
                continue;
            }
        }
        for (auto it = queue_.begin(); it != queue_.end() && first == queue_.end(); ++it) {
            if (it->requester != processing && may_take(it->requester)) {
                first = it;
            }
        }
        if (first == queue_.end()) {
            return granted;
        }
        take(first->requester);
        granted.push_back(first->ticket);
        queue_.erase(first);
    }
}

buffer_pool_model::acquisition buffer_pool_model::acquire(int requester) {
    answered_.clear();
    if (requester != processing && !registered(requester)) {
        throw std::logic_error("model: acquire by a source that is not registered");
    }
    if (may_take(requester)) {
        take(requester);
        return {true, 0};
    }
    const std::uint64_t ticket = next_ticket_++;
    queue_.push_back(waiter{ticket, requester});
    return {false, ticket};
}

bool buffer_pool_model::try_acquire(int requester) {
    answered_.clear();
    if (requester != processing && !registered(requester)) {
        throw std::logic_error("model: try_acquire by a source that is not registered");
    }
    if (!may_take(requester)) {
        return false;
    }
    take(requester);
    return true;
}

std::vector<std::uint64_t> buffer_pool_model::release(int requester) {
    answered_.clear();
    if (outstanding(requester) == 0) {
        throw std::logic_error("model: release without an outstanding buffer");
    }
    ++free_;
    if (requester == processing) {
        --outstanding_processing_;
    } else {
        auto& s = sources_.at(index(requester));
        --s.outstanding;
        if (s.state == lifecycle::retiring && s.outstanding == 0) {
            s.state = lifecycle::gone; // the reserve returns to admission with the last buffer
        }
    }
    return grant_eligible();
}

bool buffer_pool_model::cancel(std::uint64_t ticket) {
    answered_.clear();
    const auto it = std::find_if(queue_.begin(), queue_.end(),
                                 [&](const waiter& w) { return w.ticket == ticket; });
    if (it == queue_.end()) {
        return false;
    }
    queue_.erase(it);
    return true;
}

std::string buffer_pool_model::violation() const {
    std::uint64_t held = outstanding_processing_;
    for (const auto& s : sources_) {
        held += s.outstanding;
    }
    if (held + free_ != config_.buffer_count) {
        return "conservation: free + outstanding != buffer_count";
    }
    if (free_ < owed()) {
        return "reserve invariant: free < owed";
    }
    if (std::uint64_t{reserved_total()} + config_.processing_reserve > config_.buffer_count) {
        return "admission: reserves exceed the pool";
    }
    for (const auto& w : queue_) {
        if (may_take(w.requester)) {
            return "liveness: a waiter whose condition holds is still queued";
        }
    }
    if (!admissions_.empty() && floating() >= admissions_.front().reserve) {
        return "liveness: a registration whose reserve floats is still queued";
    }
    return {};
}

} // namespace sluice::model
