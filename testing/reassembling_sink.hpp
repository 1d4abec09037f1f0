#pragma once
/// A sink for processing tests and the framing fuzzer: reassembles what one source's records
/// were (each event's spanning record, then its complete records, in order) and sums the
/// event counters. Not thread-safe: one origin, whose calls never overlap.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "sluice/pipeline/sink.hpp"

namespace sluice::test {

class reassembling_sink final : public runtime::sink {
public:
    void on_data(const runtime::data_event& event) override {
        text.append(reinterpret_cast<const char*>(event.spanning_record.data()),
                    event.spanning_record.size());
        text.append(reinterpret_cast<const char*>(event.records.data()), event.records.size());
        records += event.record_count;
        fields += event.field_count;
        dropped += event.records_dropped;
        ++events;
    }
    void on_end_of_stream(std::uint64_t /*origin_id*/) override { ++ends; }
    void on_error(std::uint64_t /*origin_id*/, std::string_view message) override {
        errors.emplace_back(message);
    }

    std::string text;
    std::uint64_t records = 0;
    std::uint64_t fields = 0;
    std::uint64_t dropped = 0;
    std::uint64_t events = 0;
    std::uint64_t ends = 0;
    std::vector<std::string> errors;
};

} // namespace sluice::test
