#pragma once
/// The simulator's oracle at the sink: checks every event as it is delivered.

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "sim/sim_environment.hpp"
#include "sluice/pipeline/sink.hpp"
#include "sluice/source/generator_records.hpp"

namespace sluice::sim {

/// Checks every event as it is delivered: per origin, contiguous sequences, generator records
/// in order with the right values, nothing after EoS or Error. Runs on the simulator's thread.
class verifying_sink final : public runtime::sink {
public:
    struct origin_log {
        std::uint64_t next_sequence = 0;
        runtime::generator_record_checker checker;
        std::uint64_t bytes = 0;
        bool ended = false;
        bool failed = false;
        /// With track_times: (when, records so far) after each delivery.
        std::vector<std::pair<time_point, std::uint64_t>> times;
    };

    /// A fault: on_data throws (an engine operator that fails) with this probability, drawn
    /// from `faults`, before it records anything of the event.
    void throw_sometimes(random_stream* faults, double probability) {
        faults_ = faults;
        throw_probability_ = probability;
    }

    /// A whole-worker crash: nothing delivered from now on reaches the engine (it died too), so
    /// every later event is dropped unseen.
    void crash() noexcept { crashed_ = true; }
    bool crashed() const noexcept { return crashed_; }
    /// Before its first event: the origin's first record is `record` (a file resumed from its
    /// checkpoint), not 0.
    void start_at(std::uint64_t origin, std::uint64_t record) {
        origins_[origin].checker.start_at(record);
    }
    /// Records when each origin's deliveries came (virtual time), for the crash's window.
    void track_times(const sim_environment* clock) noexcept { clock_ = clock; }
    /// Records of `origin` delivered by time `t` (with track_times).
    std::uint64_t records_by(std::uint64_t origin, time_point t) const {
        const auto it = origins_.find(origin);
        std::uint64_t delivered = 0;
        if (it != origins_.end()) {
            for (const auto& [when, next] : it->second.times) {
                if (when > t) {
                    break;
                }
                delivered = next;
            }
        }
        return delivered;
    }

    void on_data(const runtime::data_event& event) override {
        if (crashed_) {
            return;
        }
        if (throw_probability_ > 0 && faults_->chance(throw_probability_)) {
            ++thrown;
            throw std::runtime_error("injected sink fault");
        }
        auto& log = origins_[event.origin_id];
        if (event.sequence != log.next_sequence) {
            violation("origin " + std::to_string(event.origin_id) + ": sequence " +
                      std::to_string(event.sequence) + " where " +
                      std::to_string(log.next_sequence) +
                      " was expected (lost or duplicated buffer)");
        }
        log.next_sequence = event.sequence + 1;
        if (log.ended || log.failed) {
            violation("origin " + std::to_string(event.origin_id) + ": data after EoS/Error");
        }
        log.bytes += event.raw.size();
        bytes += event.raw.size();
        records += event.record_count;
        const bool was_ok = log.checker.ok();
        log.checker.feed(event.spanning_record);
        log.checker.feed(event.records);
        if (was_ok && !log.checker.ok()) {
            violation("origin " + std::to_string(event.origin_id) + ": " + log.checker.problem());
        }
        if (clock_ != nullptr) {
            log.times.emplace_back(clock_->now(), log.checker.next_record());
        }
        ++deliveries;
    }
    void on_end_of_stream(std::uint64_t origin) override {
        if (crashed_) {
            return;
        }
        auto& log = origins_[origin];
        if (log.ended || log.failed) {
            violation("origin " + std::to_string(origin) + ": second EoS/Error");
        }
        log.ended = true;
        ++end_of_streams;
        ++deliveries;
    }
    void on_error(std::uint64_t origin, std::string_view) override {
        if (crashed_) {
            return;
        }
        auto& log = origins_[origin];
        if (log.ended || log.failed) {
            violation("origin " + std::to_string(origin) + ": second EoS/Error");
        }
        log.failed = true;
        ++errors;
        ++deliveries;
    }
    bool finished(std::uint64_t origin) const {
        const auto it = origins_.find(origin);
        return it != origins_.end() && (it->second.ended || it->second.failed);
    }
    const origin_log* find(std::uint64_t origin) const {
        const auto it = origins_.find(origin);
        return it == origins_.end() ? nullptr : &it->second;
    }

    std::vector<std::string> violations;
    std::uint64_t bytes = 0;
    std::uint64_t records = 0;
    std::uint64_t deliveries = 0;
    std::uint64_t end_of_streams = 0;
    std::uint64_t errors = 0;
    std::uint64_t thrown = 0;

private:
    random_stream* faults_ = nullptr;
    double throw_probability_ = 0.0;
    const sim_environment* clock_ = nullptr;
    bool crashed_ = false;
    void violation(std::string what) {
        if (violations.size() < 20) {
            violations.push_back(std::move(what));
        }
    }
    std::unordered_map<std::uint64_t, origin_log> origins_; ///< references stay valid as it grows
};

} // namespace sluice::sim
