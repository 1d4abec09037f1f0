#include "sluice/source/file_source.hpp"

#include <boost/asio/error.hpp>

#include "sluice/checkpoint/file_position.hpp"

namespace sluice::runtime {

namespace asio = boost::asio;
using boost::system::error_code;

file_source::file_source(environment& env, executor lane, std::string path,
                         file_checkpoint_options checkpoint)
    : reopening_source(env, std::move(lane)), path_(std::move(path)),
      checkpoint_(std::move(checkpoint)) {}

file_source::~file_source() {
    if (writer_) {
        writer_->finish(); // a failure is counted by the store; a destructor cannot report it
    }
}

asio::awaitable<file_source::opened> file_source::open_stream() {
    co_return *open_stream_now();
}

std::optional<file_source::opened> file_source::open_stream_now() {
    if (!resolved_ && checkpoint_.store != nullptr) {
        auto first = open_from_checkpoint();
        if (!first.first) {
            resolved_ = true;
            identity_ = first.second->identity();
            writer_ = checkpoint_writer::make(env_, lane_, *checkpoint_.store, checkpoint_.key,
                                              checkpoint_.interval, base_);
        }
        return first;
    }
    resolved_ = true;
    return env_.open_file(lane_, path_, base_ + bytes_read());
}

file_source::opened file_source::fail_open(std::string why) {
    error_detail_ = std::move(why);
    return {asio::error::invalid_argument, nullptr};
}

file_source::opened file_source::open_from_checkpoint() {
    checkpoint_store& store = *checkpoint_.store;
    const std::string where = store.where(checkpoint_.key);
    const auto saved = store.load(checkpoint_.key);
    if (!saved.error.empty()) {
        store.count_load(false);
        return fail_open(saved.error);
    }
    auto from_start = env_.open_file(lane_, path_, 0);
    if (!saved.found || from_start.first) {
        return from_start; // no checkpoint yet: from 0; or the file cannot be opened
    }
    const auto decoded = decode_file_position(saved.value, checkpoint_.key, where);
    if (!decoded.error.empty()) {
        store.count_load(false);
        return fail_open(decoded.error);
    }
    store.count_load(true);
    const file_position& position = *decoded.position;
    if (position.path != path_) {
        return fail_open("the checkpoint " + where + " is of the file " + position.path + ", not " +
                         path_ + ": move it away to read the new file from the start");
    }
    const file_identity now = from_start.second->identity();
    const bool replaced = now.device != position.device || now.inode != position.inode;
    if (replaced || now.size < position.offset) {
        store.count_restart_from_zero();
        store.notice("file " + path_ + ": " +
                     (replaced ? std::string("replaced since its checkpoint (another inode)")
                               : "shorter (" + std::to_string(now.size) +
                                     " bytes) than its checkpoint's offset " +
                                     std::to_string(position.offset)) +
                     " in " + where + "; reading it from the start");
        return from_start;
    }
    from_start.second->close();
    auto resumed = env_.open_file(lane_, path_, position.offset);
    if (resumed.first) {
        return resumed;
    }
    const file_identity again = resumed.second->identity();
    if (again.device != now.device || again.inode != now.inode) {
        return fail_open("file " + path_ +
                         " was replaced while it was being opened; start the "
                         "source again");
    }
    base_ = position.offset;
    store.count_resume(position.offset);
    return resumed;
}

void file_source::processed(std::uint64_t stream_bytes) {
    if (!writer_) {
        return;
    }
    const std::uint64_t offset = base_ + stream_bytes;
    writer_->update(
        encode_file_position({path_, identity_.device, identity_.inode, offset}, checkpoint_.key),
        offset);
}

} // namespace sluice::runtime
