#pragma once
/// Writes one source's checkpoint: the newest value it was given, at most once per interval,
/// on the environment's blocking pool (a save fsyncs, which must not stall an I/O lane), and
/// the last one synchronously when the source is done with it (`finish`). Values are written
/// in the order given; a write that fails is counted and retried with the next interval.

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "sluice/checkpoint/checkpoint_store.hpp"
#include "sluice/env/environment.hpp"

namespace sluice::runtime {

class checkpoint_writer : public std::enable_shared_from_this<checkpoint_writer> {
public:
    /// `store` must outlive the writer and every save it has posted (the worker's). `saved`:
    /// the position the store holds now (where the source resumed).
    static std::shared_ptr<checkpoint_writer> make(environment& env, executor lane,
                                                   checkpoint_store& store, std::string key,
                                                   duration interval, std::uint64_t saved);
    checkpoint_writer(environment& env, executor lane, checkpoint_store& store, std::string key,
                      duration interval, std::uint64_t saved);
    checkpoint_writer(const checkpoint_writer&) = delete;
    checkpoint_writer& operator=(const checkpoint_writer&) = delete;
    /// What was never saved leaves the store's unsaved count.
    ~checkpoint_writer();

    /// The value to write next, for `position` (a byte offset: the store counts what is not
    /// saved yet). Any thread (the source's lane, or a shutdown's).
    void update(std::string value, std::uint64_t position);
    /// Writes the newest value now if it is not written yet; a timer or a save still on its
    /// way does nothing after this. Blocks. Any thread. Empty, or the save's error.
    std::string finish();

    checkpoint_store& store() noexcept { return store_; }
    const std::string& key() const noexcept { return key_; }

private:
    /// On the lane: the timer for the next write.
    void arm();
    /// A blocking-pool task: the newest value, saved.
    void write_pending();
    /// Saves pending_ (under mutex_). Empty, or the store's error.
    std::string save_pending();

    environment& env_;
    executor lane_;
    checkpoint_store& store_;
    std::string key_;
    duration interval_;
    std::unique_ptr<timer> timer_; ///< lane-only (made and armed there; destroyed with this)
    std::mutex mutex_;             ///< guards what follows; held over a save (saves in order)
    std::string pending_;
    std::uint64_t pending_position_ = 0;
    std::uint64_t saved_position_ = 0;
    bool dirty_ = false;     ///< pending_ is not written yet
    bool scheduled_ = false; ///< a timer or a posted save will write it
    bool finished_ = false;
    time_point last_write_{};
};

} // namespace sluice::runtime
