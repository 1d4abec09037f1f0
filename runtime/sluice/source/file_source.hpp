#pragma once
/// A file read to its end, resumable. Within a run, a restart (after an engine stop) resumes at
/// the byte after the last one read, which the stop delivered: nothing is read twice. With a
/// checkpoint store, it also resumes across a restart of the whole worker (or a crash): it
/// tracks its processed position, saves it (`[checkpoint]`), and its first open continues from
/// the saved offset, so records after the last checkpoint are delivered again (at least once)
/// and none is lost. A file replaced since its checkpoint (another inode, or shorter than the
/// offset) is read from the start, and the store's notice says so; a checkpoint that is corrupt
/// or of another source fails the source with an error naming the checkpoint file.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "sluice/checkpoint/checkpoint_store.hpp"
#include "sluice/checkpoint/checkpoint_writer.hpp"
#include "sluice/source/stream_sources.hpp"

namespace sluice::runtime {

struct file_checkpoint_options {
    checkpoint_store* store = nullptr; ///< null: none (a new worker reads the file from 0)
    std::string key;                   ///< the checkpoint's name in the store (the source's)
    duration interval = std::chrono::seconds(1); ///< between saves, at most one each
};

class file_source final : public reopening_source {
public:
    file_source(environment& env, executor lane, std::string path,
                file_checkpoint_options checkpoint = {});
    /// Saves the last processed position (a clean stop loses nothing and repeats nothing).
    ~file_source() override;
    file_source(const file_source&) = delete;
    file_source& operator=(const file_source&) = delete;

    source_kind kind() const noexcept override { return source_kind::file; }
    std::string describe() const override { return "file " + path_; }
    bool continues_after_reopen() const noexcept override { return true; }
    bool tracks_processed() const noexcept override { return checkpoint_.store != nullptr; }
    void processed(std::uint64_t stream_bytes) override;
    std::string error_detail() const override { return error_detail_; }

    /// The offset the first open started at (0, or the checkpoint's). Lane-only.
    std::uint64_t resumed_at() const noexcept { return base_; }

private:
    using opened = std::pair<boost::system::error_code, std::unique_ptr<byte_stream>>;
    boost::asio::awaitable<opened> open_stream() override;
    std::optional<opened> open_stream_now() override;
    /// The first open with a checkpoint store: where to start, from the saved position.
    opened open_from_checkpoint();
    opened fail_open(std::string why);

    std::string path_;
    file_checkpoint_options checkpoint_;
    std::shared_ptr<checkpoint_writer> writer_; ///< with a store: made at the first open
    file_identity identity_;                    ///< of the file opened first
    std::uint64_t base_ = 0;                    ///< file offset of stream byte 0
    bool resolved_ = false;                     ///< the first open has decided base_
    std::string error_detail_;
};

} // namespace sluice::runtime
