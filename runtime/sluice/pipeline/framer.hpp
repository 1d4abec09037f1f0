#pragma once
/// Framing: how a source's byte stream becomes records. A record may span buffers; the framer
/// keeps what it needs between one source's buffers in a `framing_state` that processing holds
/// per source (inline: nothing is allocated until a record spans buffers). Processing calls a
/// framer for one source at a time, in sequence order, on a compute thread; one framer serves
/// every source, so it keeps nothing of its own between calls.
///
/// Built in: newline-delimited and length-prefixed records. An engine with another format
/// (say, records ended by "\r\n" or a varint length) implements `framer` and sets
/// `processing_options::custom_framer`.

#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <string_view>

namespace sluice::runtime {

/// What a framer carries from one buffer of a source to the next.
struct framing_state {
    /// `skip_bytes` when an oversize record is skipped to its end, whose length is not known.
    static constexpr std::uint64_t skip_to_end = std::numeric_limits<std::uint64_t>::max();

    std::string carry;            ///< the bytes of a record not yet ended
    std::uint64_t skip_bytes = 0; ///< bytes of a dropped (oversize) record still to skip

    /// Something is carried: the next buffer starts inside a record.
    bool carries() const noexcept { return !carry.empty() || skip_bytes != 0; }
    /// Forgets what is carried (a new connection starts on a record boundary).
    void reset() noexcept {
        carry.clear();
        skip_bytes = 0;
    }
};

/// The start of a buffer, continuing the record carried from earlier buffers.
struct carried_step {
    std::size_t consumed = 0;  ///< bytes of the buffer that belonged to the carried record
    bool complete = false;     ///< `framing_state::carry` now holds that record, whole
    std::uint64_t dropped = 0; ///< records dropped because they grew over the maximum
};

/// The complete records of a buffer that starts on a record boundary.
struct framed_records {
    std::span<const std::byte> records; ///< complete records: a prefix of the bytes framed
    std::uint64_t count = 0;            ///< records in `records`
    std::uint64_t dropped = 0;          ///< a tail already known to be over the maximum
};

class framer {
public:
    framer() = default;
    framer(const framer&) = delete;
    framer& operator=(const framer&) = delete;
    framer(framer&&) = delete;
    framer& operator=(framer&&) = delete;
    virtual ~framer() = default;

    /// For logs and errors ("newline", "length_prefixed").
    virtual std::string_view name() const noexcept = 0;

    /// Called when `state.carries()`: continues the carried record with the start of `bytes`,
    /// appending to `state.carry` (or skipping a dropped record). When the record ends here,
    /// returns `complete` with the record whole in `state.carry` (processing delivers it and
    /// clears the carry). A record that grows over `record_bytes_max` is dropped, counted, and
    /// skipped to its end. Consumes all of `bytes` when the record does not end in them.
    virtual carried_step continue_record(framing_state& state, std::span<const std::byte> bytes,
                                         std::size_t record_bytes_max) const = 0;

    /// Called when nothing is carried: `bytes` start on a record boundary. Returns the complete
    /// records at their start and keeps the unfinished tail in `state.carry` (or, when the tail
    /// is already known to be over `record_bytes_max`, drops it and sets `state.skip_bytes`).
    virtual framed_records frame(framing_state& state, std::span<const std::byte> bytes,
                                 std::size_t record_bytes_max) const = 0;

    /// How often `value` occurs in the payloads of `records` — complete records in this
    /// framing, one or many — not counting the framing's own bytes (delimiters, headers).
    /// Stages count with this, so they need not know the framing.
    virtual std::uint64_t count_in_payloads(std::span<const std::byte> records,
                                            std::byte value) const noexcept = 0;

    /// Whether a buffer holding `bytes` may end on a record boundary. The demand flush sends a
    /// small buffer early only when it may, so records are not split needlessly. True when
    /// the framing cannot tell from the last bytes.
    virtual bool may_end_record(std::span<const std::byte> bytes) const noexcept {
        (void)bytes;
        return true;
    }
};

/// Records end with '\n', which is part of the record as the sink sees it.
const framer& newline_framer() noexcept;
/// Each record is a 4-byte big-endian payload length, then the payload.
const framer& length_prefixed_framer() noexcept;

} // namespace sluice::runtime
