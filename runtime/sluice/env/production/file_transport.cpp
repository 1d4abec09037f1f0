// Files: read with blocking reads on the blocking pool, resumable at an offset.
#include "sluice/env/production_environment.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sluice/env/production/asio_lanes.hpp"
#include <cerrno>

namespace sluice::runtime {

using namespace detail;

namespace {

class file_stream final : public byte_stream {
public:
    file_stream(int fd, std::string path, file_identity identity)
        : fd_(fd), path_(std::move(path)), identity_(identity) {}
    ~file_stream() override { close(); }
    file_stream(const file_stream&) = delete;
    file_stream& operator=(const file_stream&) = delete;

    asio::awaitable<error_code> wait_readable() override {
        // A regular file is always readable; yield once so a long file does not monopolise
        // its lane, and report a close as an abort.
        co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);
        co_return fd_ < 0 ? error_code(asio::error::operation_aborted) : error_code{};
    }
    read_result read_now(std::span<std::byte> space) override {
        if (fd_ < 0) {
            return {read_result::status::error, 0, asio::error::bad_descriptor};
        }
        for (int attempt = 0; attempt < 8; ++attempt) { // EINTR is retried, boundedly
            const ssize_t n = ::read(fd_, space.data(), space.size());
            if (n > 0) {
                return {read_result::status::data, static_cast<std::size_t>(n), {}};
            }
            if (n == 0) {
                return {read_result::status::end_of_stream, 0, {}};
            }
            if (errno != EINTR) {
                return {read_result::status::error, 0,
                        error_code(errno, boost::system::system_category())};
            }
        }
        return {read_result::status::would_block, 0, {}};
    }
    void close() noexcept override {
        if (fd_ >= 0) {
            ::close(fd_);
            fd_ = -1;
        }
    }
    std::string describe() const override { return "file " + path_; }
    file_identity identity() const override { return identity_; }

private:
    int fd_;
    std::string path_;
    file_identity identity_;
};

} // namespace

std::pair<error_code, std::unique_ptr<byte_stream>>
production_environment::open_file(executor /*lane*/, const std::string& path,
                                  std::uint64_t offset) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return {error_code(errno, boost::system::system_category()), nullptr};
    }
    struct stat status {};
    if (::fstat(fd, &status) != 0) {
        const error_code failed(errno, boost::system::system_category());
        ::close(fd);
        return {failed, nullptr};
    }
    const file_identity identity{static_cast<std::uint64_t>(status.st_dev),
                                 static_cast<std::uint64_t>(status.st_ino),
                                 static_cast<std::uint64_t>(status.st_size)};
    if (offset > 0 && (identity.size < offset || ::lseek(fd, static_cast<off_t>(offset),
                                                         SEEK_SET) != static_cast<off_t>(offset))) {
        ::close(fd);
        return {error_code(EINVAL, boost::system::system_category()), nullptr};
    }
    return {error_code{}, std::make_unique<file_stream>(fd, path, identity)};
}

} // namespace sluice::runtime
