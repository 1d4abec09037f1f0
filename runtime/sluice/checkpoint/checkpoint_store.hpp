#pragma once
/// Checkpoints (at-least-once delivery across a crash): where sources that can resume keep
/// their processed position. A store maps a key (the source's name) to a small value that it
/// replaces atomically: after a crash at any moment, a load returns the old value or the new
/// one, whole. `directory_checkpoint_store` keeps one file per key (write, fsync, rename, fsync
/// of the directory); the simulator has one in memory that a whole-worker crash freezes.
///
/// Loads and saves block (file I/O); sources call them from the blocking pool through a
/// `checkpoint_writer`, and once at their first open.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>

namespace sluice::runtime {

struct checkpoint_stats {
    std::uint64_t writes_total = 0;
    std::uint64_t write_failures_total = 0;
    std::uint64_t loads_total = 0;              ///< checkpoints found and read at an open
    std::uint64_t load_failures_total = 0;      ///< unreadable, corrupt or foreign ones
    std::uint64_t resumes_total = 0;            ///< sources that resumed from a checkpoint
    std::uint64_t restarts_from_zero_total = 0; ///< checkpoints ignored: the data was replaced
    std::uint64_t resumed_bytes_total = 0;      ///< bytes not read again thanks to them
    /// Processed and not yet in a saved checkpoint, over every writer: what a crash now would
    /// deliver again.
    std::uint64_t unsaved_bytes = 0;
};

class checkpoint_store {
public:
    /// A checkpoint's value is at most this long (a position, not data).
    static constexpr std::size_t value_bytes_max = 4096;

    struct loaded {
        bool found = false;
        std::string value;
        std::string error; ///< non-empty: the checkpoint exists and cannot be read (says why)
    };

    checkpoint_store() = default;
    checkpoint_store(const checkpoint_store&) = delete;
    checkpoint_store& operator=(const checkpoint_store&) = delete;
    virtual ~checkpoint_store() = default;

    /// The value saved under `key`, if any. Blocks. Any thread.
    virtual loaded load(std::string_view key) = 0;
    /// Replaces the value under `key` atomically. Blocks. Any thread. Empty, or the error.
    virtual std::string save(std::string_view key, std::string_view value) = 0;
    /// Where `key`'s checkpoint is kept, for messages (a path).
    virtual std::string where(std::string_view key) const = 0;

    /// Something an operator should hear that is not an error (a file replaced since its
    /// checkpoint is read from 0). Set before sources run.
    void set_notice_callback(std::function<void(const std::string&)> callback) {
        notice_ = std::move(callback);
    }
    void notice(const std::string& message) const;

    checkpoint_stats stats() const noexcept;
    /// Counting, for sources and the writer.
    void count_write(bool ok) noexcept;
    void count_load(bool ok) noexcept;
    void count_resume(std::uint64_t bytes) noexcept;
    void count_restart_from_zero() noexcept;
    /// Writers: their processed position moved by `bytes` (> 0) or a save covered it (< 0).
    void add_unsaved(std::int64_t bytes) noexcept;

private:
    std::function<void(const std::string&)> notice_;
    std::atomic<std::uint64_t> writes_{0};
    std::atomic<std::uint64_t> write_failures_{0};
    std::atomic<std::uint64_t> loads_{0};
    std::atomic<std::uint64_t> load_failures_{0};
    std::atomic<std::uint64_t> resumes_{0};
    std::atomic<std::uint64_t> restarts_from_zero_{0};
    std::atomic<std::uint64_t> resumed_bytes_{0};
    std::atomic<std::int64_t> unsaved_{0};
};

/// One file per key in `directory`, which must exist and be writable: `<key>.checkpoint`, the
/// key's characters outside [A-Za-z0-9_-] percent-encoded. A save writes `<file>.tmp`, fsyncs
/// it, renames it over the file and fsyncs the directory.
class directory_checkpoint_store final : public checkpoint_store {
public:
    explicit directory_checkpoint_store(std::string directory);
    loaded load(std::string_view key) override;
    std::string save(std::string_view key, std::string_view value) override;
    std::string where(std::string_view key) const override;
    const std::string& directory() const noexcept { return directory_; }

    /// Empty when `directory` is a directory this process can write to, else why not.
    static std::string check_directory(const std::string& directory);

private:
    std::string directory_;
};

} // namespace sluice::runtime
