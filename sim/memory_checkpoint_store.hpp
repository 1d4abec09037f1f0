#pragma once
/// The simulator's checkpoint store: values in memory, which outlive a simulated whole-worker
/// crash. `crash()` freezes it as the crash left it (a dead process writes nothing: every
/// later save is dropped), and `restart()` lets the next worker write again.

#include <map>
#include <string>
#include <string_view>

#include "sluice/checkpoint/checkpoint_store.hpp"

namespace sluice::sim {

class memory_checkpoint_store final : public runtime::checkpoint_store {
public:
    loaded load(std::string_view key) override {
        loaded result;
        if (const auto it = values_.find(std::string(key)); it != values_.end()) {
            result.found = true;
            result.value = it->second;
        }
        return result;
    }
    std::string save(std::string_view key, std::string_view value) override {
        if (crashed_) {
            ++dropped_;
            return "the worker has crashed";
        }
        values_[std::string(key)] = std::string(value);
        count_write(true);
        return {};
    }
    std::string where(std::string_view key) const override { return "memory:" + std::string(key); }

    void crash() noexcept { crashed_ = true; }
    void restart() noexcept { crashed_ = false; }
    /// Saves a crashed worker tried (its teardown's), dropped.
    std::uint64_t dropped() const noexcept { return dropped_; }

private:
    std::map<std::string, std::string, std::less<>> values_;
    bool crashed_ = false;
    std::uint64_t dropped_ = 0;
};

} // namespace sluice::sim
