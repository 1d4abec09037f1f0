#pragma once
/// The engine-facing end of the pipeline: what a processed buffer looks like (`data_event`) and
/// the interface an engine implements to receive it (`sink`).

#include <cstdint>
#include <span>
#include <string_view>

#include "sluice/pool/buffer.hpp"

namespace sluice::runtime {

/// One processed buffer, as the sink sees it.
struct data_event {
    std::uint64_t origin_id = 0;
    std::uint64_t sequence = 0;
    flush_reason reason = flush_reason::none;
    std::span<const std::byte> raw; ///< the bytes exactly as the source delivered them
    /// The record that began in an earlier buffer and ended in this one, reassembled (in an
    /// output buffer from the processing reserve); empty when none.
    std::span<const std::byte> spanning_record;
    /// Complete records that begin and end inside `raw` (a sub-span of it).
    std::span<const std::byte> records;
    std::uint64_t record_count = 0;    ///< including the spanning record
    std::uint64_t field_count = 0;     ///< CSV fields over all those records
    std::uint64_t records_dropped = 0; ///< records longer than record_bytes_max, skipped
    /// 1 when this buffer starts a new connection (a reconnect, a restart) and the previous
    /// connection had left a record unfinished: that record was dropped, never joined to
    /// these bytes.
    std::uint64_t records_truncated = 0;
};

/// The engine-facing sink. Called on compute threads; for one origin, calls never overlap and
/// come in order: data events in sequence order, then at most one end-of-stream or error.
/// An exception from `on_data` fails that origin: processing reports it by `on_error` (with
/// the exception's message), drops the origin's later buffers (counted as discarded) and asks
/// the source to stop (see `processing::set_failure_callback`); other origins are unaffected.
/// An exception from `on_end_of_stream` or `on_error` is counted and otherwise ignored.
class sink {
public:
    virtual ~sink() = default;
    virtual void on_data(const data_event& event) = 0;
    virtual void on_end_of_stream(std::uint64_t origin_id) = 0;
    virtual void on_error(std::uint64_t origin_id, std::string_view message) = 0;
};

} // namespace sluice::runtime
