#include "sluice/source/blocking_source.hpp"

#include <exception>

#include <boost/asio/async_result.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "sluice/core/assert.hpp"

namespace sluice::runtime {

namespace asio = boost::asio;
using boost::system::error_code;

blocking_source::blocking_source(environment& env, executor lane,
                                 std::unique_ptr<blocking_reader> reader, std::string description)
    : env_(env), lane_(std::move(lane)), reader_(std::move(reader)),
      description_(std::move(description)) {
    SLUICE_ASSERT(reader_ != nullptr);
}

asio::awaitable<error_code> blocking_source::open() {
    co_return error_code{};
}

asio::awaitable<error_code> blocking_source::wait_readable() {
    co_return asio::error::operation_not_supported; // reads_into_buffer(): never called
}

read_result blocking_source::read_now(std::span<std::byte> /*space*/) {
    return {read_result::status::error, 0, asio::error::operation_not_supported};
}

void blocking_source::close() noexcept {
    reader_->interrupt();
}

asio::awaitable<read_result> blocking_source::read_some(std::span<std::byte> space) {
    struct outcome {
        read_result result;
        std::string message;
    };
    // The job runs on a blocking-pool thread; its result is posted back to this lane. A read in
    // progress is not cancellable (it is a blocking call): stop interrupts the reader instead.
    auto done = co_await asio::async_initiate<decltype(asio::use_awaitable), void(outcome)>(
        [this, space](auto handler) {
            auto shared = std::make_shared<decltype(handler)>(std::move(handler));
            env_.post_blocking([reader = reader_, space, lane = lane_, shared] {
                outcome out;
                try {
                    const std::size_t n = reader->read_blocking(space);
                    out.result = n > 0 ? read_result{read_result::status::data, n, {}}
                                       : read_result{read_result::status::end_of_stream, 0, {}};
                } catch (const std::exception& e) {
                    out.result = {read_result::status::error, 0,
                                  make_error_code(boost::system::errc::io_error)};
                    out.message = e.what();
                }
                asio::post(lane,
                           [shared, out = std::move(out)]() mutable { (*shared)(std::move(out)); });
            });
        },
        asio::use_awaitable);
    if (!done.message.empty()) {
        last_error_ = std::move(done.message);
    }
    co_return done.result;
}

} // namespace sluice::runtime
