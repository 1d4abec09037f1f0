// Checkpoint stores: the counters every store keeps, and the directory store's atomic files.
#include "sluice/checkpoint/checkpoint_store.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace sluice::runtime {

void checkpoint_store::notice(const std::string& message) const {
    if (notice_) {
        try {
            notice_(message);
        } catch (...) {
            // A notice that cannot be logged is not worth failing a source for.
        }
    }
}

checkpoint_stats checkpoint_store::stats() const noexcept {
    checkpoint_stats s;
    s.writes_total = writes_.load(std::memory_order_relaxed);
    s.write_failures_total = write_failures_.load(std::memory_order_relaxed);
    s.loads_total = loads_.load(std::memory_order_relaxed);
    s.load_failures_total = load_failures_.load(std::memory_order_relaxed);
    s.resumes_total = resumes_.load(std::memory_order_relaxed);
    s.restarts_from_zero_total = restarts_from_zero_.load(std::memory_order_relaxed);
    s.resumed_bytes_total = resumed_bytes_.load(std::memory_order_relaxed);
    s.unsaved_bytes = static_cast<std::uint64_t>(
        std::max<std::int64_t>(0, unsaved_.load(std::memory_order_relaxed)));
    return s;
}

void checkpoint_store::count_write(bool ok) noexcept {
    (ok ? writes_ : write_failures_).fetch_add(1, std::memory_order_relaxed);
}
void checkpoint_store::count_load(bool ok) noexcept {
    (ok ? loads_ : load_failures_).fetch_add(1, std::memory_order_relaxed);
}
void checkpoint_store::count_resume(std::uint64_t bytes) noexcept {
    resumes_.fetch_add(1, std::memory_order_relaxed);
    resumed_bytes_.fetch_add(bytes, std::memory_order_relaxed);
}
void checkpoint_store::add_unsaved(std::int64_t bytes) noexcept {
    unsaved_.fetch_add(bytes, std::memory_order_relaxed);
}
void checkpoint_store::count_restart_from_zero() noexcept {
    restarts_from_zero_.fetch_add(1, std::memory_order_relaxed);
}

namespace {

std::string system_error(const std::string& what, const std::string& path) {
    return what + " " + path + ": " + std::strerror(errno);
}

/// Closes a descriptor on every path out.
struct descriptor {
    int fd = -1;
    ~descriptor() {
        if (fd >= 0) {
            ::close(fd);
        }
    }
};

bool write_all(int fd, std::string_view bytes) {
    while (!bytes.empty()) {
        const ssize_t n = ::write(fd, bytes.data(), bytes.size());
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return false;
        }
        bytes.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
}

} // namespace

directory_checkpoint_store::directory_checkpoint_store(std::string directory)
    : directory_(std::move(directory)) {
    while (directory_.size() > 1 && directory_.back() == '/') {
        directory_.pop_back();
    }
}

std::string directory_checkpoint_store::check_directory(const std::string& directory) {
    struct stat status {};
    if (::stat(directory.c_str(), &status) != 0) {
        return system_error("cannot use the checkpoint directory", directory) +
               " (create it, or set [checkpoint] directory to one that exists)";
    }
    if (!S_ISDIR(status.st_mode)) {
        return "the checkpoint directory " + directory + " is not a directory";
    }
    if (::access(directory.c_str(), W_OK | X_OK) != 0) {
        return system_error("cannot write to the checkpoint directory", directory) +
               " (give the worker's user write access)";
    }
    return {};
}

std::string directory_checkpoint_store::where(std::string_view key) const {
    static constexpr char hex[] = "0123456789ABCDEF";
    std::string path = directory_ + "/";
    for (const char c : key) {
        const auto u = static_cast<unsigned char>(c);
        if ((u >= 'a' && u <= 'z') || (u >= 'A' && u <= 'Z') || (u >= '0' && u <= '9') ||
            c == '_' || c == '-') {
            path += c;
        } else {
            path += '%';
            path += hex[u >> 4U];
            path += hex[u & 15U];
        }
    }
    return path + ".checkpoint";
}

checkpoint_store::loaded directory_checkpoint_store::load(std::string_view key) {
    loaded result;
    const std::string path = where(key);
    descriptor file{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
    if (file.fd < 0) {
        if (errno != ENOENT) {
            result.error = system_error("cannot read the checkpoint", path);
        }
        return result;
    }
    result.found = true;
    char chunk[1024];
    while (true) {
        const ssize_t n = ::read(file.fd, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            result.error = system_error("cannot read the checkpoint", path);
            return result;
        }
        if (n == 0) {
            break;
        }
        result.value.append(chunk, static_cast<std::size_t>(n));
        if (result.value.size() > value_bytes_max) {
            result.error = "the checkpoint " + path + " is longer than " +
                           std::to_string(value_bytes_max) +
                           " bytes: it is not a sluice checkpoint (move it away)";
            return result;
        }
    }
    return result;
}

std::string directory_checkpoint_store::save(std::string_view key, std::string_view value) {
    if (value.size() > value_bytes_max) {
        count_write(false);
        return "a checkpoint value of " + std::to_string(value.size()) + " bytes is over " +
               std::to_string(value_bytes_max);
    }
    const std::string path = where(key);
    const std::string temporary = path + ".tmp";
    std::string error;
    {
        descriptor file{::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640)};
        if (file.fd < 0) {
            error = system_error("cannot create", temporary);
        } else if (!write_all(file.fd, value)) {
            error = system_error("cannot write", temporary);
        } else if (::fsync(file.fd) != 0) {
            error = system_error("cannot fsync", temporary);
        }
    }
    if (error.empty() && ::rename(temporary.c_str(), path.c_str()) != 0) {
        error = system_error("cannot rename over", path);
    }
    if (error.empty()) {
        // The rename is durable once the directory is.
        descriptor dir{::open(directory_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
        if (dir.fd < 0 || ::fsync(dir.fd) != 0) {
            error = system_error("cannot fsync the checkpoint directory", directory_);
        }
    }
    count_write(error.empty());
    return error;
}

} // namespace sluice::runtime
