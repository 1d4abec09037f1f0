#pragma once
/// A file source's checkpoint value: which file (path, device and inode) and the offset up to
/// which processing has finished with its records. Text, versioned, with an XXH3 checksum, so
/// that a corrupt or foreign checkpoint is an error naming the file, never a silent restart.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace sluice::runtime {

struct file_position {
    std::string path;
    std::uint64_t device = 0;
    std::uint64_t inode = 0;
    std::uint64_t offset = 0; ///< the first byte not yet processed (a record boundary)
};

/// The checkpoint value for `position` of the source whose checkpoint key is `key`.
std::string encode_file_position(const file_position& position, std::string_view key);

struct decoded_file_position {
    std::optional<file_position> position; ///< set when `error` is empty
    std::string error;
};

/// Reads a value written by `encode_file_position` for `key`. `where` names the checkpoint in
/// errors (its path).
decoded_file_position decode_file_position(std::string_view value, std::string_view key,
                                           const std::string& where);

} // namespace sluice::runtime
