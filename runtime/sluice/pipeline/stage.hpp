#pragma once
/// A pipeline stage: what processing does with each buffer's records after framing and before
/// the sink — decoding, counting, validating. Stages run in the order they are listed in
/// `processing_options::stages`, on a compute thread, for one source at a time in sequence
/// order; different sources run concurrently, so a stage that keeps counters of its own makes
/// them thread-safe. A stage that throws fails that source exactly as a throwing sink does
/// (see `sink`): its error is reported and its later buffers are discarded.
///
/// Built in: `count_csv_fields()` (on by default), which counts the comma-separated fields of
/// every record into `data_event::field_count`.

#include <memory>
#include <string_view>

#include "sluice/pipeline/framer.hpp"
#include "sluice/pipeline/sink.hpp"

namespace sluice::runtime {

class stage {
public:
    stage() = default;
    stage(const stage&) = delete;
    stage& operator=(const stage&) = delete;
    stage(stage&&) = delete;
    stage& operator=(stage&&) = delete;
    virtual ~stage() = default;

    /// For logs and errors.
    virtual std::string_view name() const noexcept = 0;
    /// One buffer: `event.spanning_record` and `event.records` hold whole records in the
    /// framing `records_format` describes (use its `count_in_payloads` rather than assuming a
    /// delimiter). A stage may add to the event's counters for the sink to see.
    virtual void process(const framer& records_format, data_event& event) = 0;
};

/// Counts CSV fields (commas + 1 per record) into `data_event::field_count`. Stateless; one
/// instance serves every processing that lists it.
std::shared_ptr<stage> count_csv_fields();

} // namespace sluice::runtime
