#include "sluice/checkpoint/checkpoint_writer.hpp"

#include <algorithm>

#include <boost/asio/post.hpp>

namespace sluice::runtime {

namespace asio = boost::asio;

std::shared_ptr<checkpoint_writer> checkpoint_writer::make(environment& env, executor lane,
                                                           checkpoint_store& store, std::string key,
                                                           duration interval, std::uint64_t saved) {
    return std::make_shared<checkpoint_writer>(env, std::move(lane), store, std::move(key),
                                               interval, saved);
}

checkpoint_writer::checkpoint_writer(environment& env, executor lane, checkpoint_store& store,
                                     std::string key, duration interval, std::uint64_t saved)
    : env_(env), lane_(std::move(lane)), store_(store), key_(std::move(key)), interval_(interval),
      pending_position_(saved), saved_position_(saved), last_write_(env.now() - interval) {}

checkpoint_writer::~checkpoint_writer() {
    store_.add_unsaved(-static_cast<std::int64_t>(pending_position_ - saved_position_));
}

std::string checkpoint_writer::save_pending() {
    dirty_ = false;
    std::string error = store_.save(key_, pending_);
    if (!error.empty()) {
        dirty_ = true; // counted by the store; the next update or finish tries again
        return error;
    }
    store_.add_unsaved(-static_cast<std::int64_t>(pending_position_ - saved_position_));
    saved_position_ = pending_position_;
    return error;
}

void checkpoint_writer::update(std::string value, std::uint64_t position) {
    const std::lock_guard lock(mutex_);
    if (finished_ || position < pending_position_) {
        return; // positions only grow; an older one is already covered
    }
    store_.add_unsaved(static_cast<std::int64_t>(position - pending_position_));
    pending_position_ = position;
    pending_ = std::move(value);
    dirty_ = true;
    if (scheduled_) {
        return; // the scheduled write takes the newest value
    }
    scheduled_ = true;
    try {
        // Armed on the lane: the last update comes at shutdown, from another thread.
        asio::post(lane_, [weak = weak_from_this()] {
            if (const auto self = weak.lock()) {
                self->arm();
            }
        });
    } catch (...) {
        scheduled_ = false; // the next update schedules again; finish writes it in any case
    }
}

void checkpoint_writer::arm() {
    const std::lock_guard lock(mutex_);
    if (finished_) {
        return;
    }
    const duration wait = std::max(duration{0}, last_write_ + interval_ - env_.now());
    if (!timer_) {
        timer_ = env_.make_timer(lane_);
    }
    timer_->on_expiry(wait, [weak = weak_from_this()](bool elapsed) {
        const auto self = weak.lock();
        if (!self || !elapsed) {
            return;
        }
        try {
            self->env_.post_blocking([self] { self->write_pending(); });
        } catch (...) {
            const std::lock_guard relock(self->mutex_);
            self->scheduled_ = false; // the next update schedules again
        }
    });
}

void checkpoint_writer::write_pending() {
    const std::lock_guard lock(mutex_);
    scheduled_ = false;
    if (!dirty_ || finished_) {
        return;
    }
    save_pending();
    last_write_ = env_.now();
}

std::string checkpoint_writer::finish() {
    const std::lock_guard lock(mutex_);
    finished_ = true; // a timer or a save still on its way does nothing now
    if (!dirty_) {
        return {};
    }
    return save_pending();
}

} // namespace sluice::runtime
