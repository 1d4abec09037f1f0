#pragma once
/// Runs a legacy blocking reader (G7): each read is a job on the environment's bounded blocking
/// pool, completed back on the source's lane. The thread count is bounded by that pool, not by
/// the number of legacy sources; when all its threads are busy, further reads queue.

#include <memory>
#include <string>

#include "sluice/env/environment.hpp"
#include "sluice/source/source.hpp"

namespace sluice::runtime {

class blocking_source final : public source {
public:
    blocking_source(environment& env, executor lane, std::unique_ptr<blocking_reader> reader,
                    std::string description);
    source_kind kind() const noexcept override { return source_kind::blocking; }
    std::string describe() const override { return description_; }
    boost::asio::awaitable<boost::system::error_code> open() override;
    boost::asio::awaitable<boost::system::error_code> wait_readable() override;
    read_result read_now(std::span<std::byte> space) override;
    void close() noexcept override;
    bool reads_into_buffer() const noexcept override { return true; }
    boost::asio::awaitable<read_result> read_some(std::span<std::byte> space) override;

    /// What the reader's last exception said.
    std::string error_detail() const override { return last_error_; }

private:
    environment& env_;
    executor lane_;
    /// Shared with the blocking job so a job still running cannot outlive the reader.
    std::shared_ptr<blocking_reader> reader_;
    std::string description_;
    std::string last_error_;
};

} // namespace sluice::runtime
