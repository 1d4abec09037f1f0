#pragma once
/// A fixed-bucket histogram with relaxed atomic counters: observing is a few uncontended
/// atomic adds, no lock, so the data path can record waits and durations; the metrics collector
/// reads a snapshot at scrape time. Buckets are upper bounds, as Prometheus histograms expect.

#include <array>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace sluice::runtime {

struct histogram_snapshot {
    std::vector<double> upper_bounds;      ///< finite bounds, ascending (+Inf is implicit)
    std::vector<std::uint64_t> cumulative; ///< per bound, then one for +Inf (= count)
    double sum = 0.0;
};

template <std::size_t BucketCount> class atomic_histogram {
public:
    explicit constexpr atomic_histogram(const std::array<double, BucketCount>& upper_bounds)
        : bounds_(upper_bounds) {}

    void observe(double value) noexcept {
        std::size_t i = 0;
        while (i < BucketCount && value > bounds_[i]) {
            ++i;
        }
        counts_[i].fetch_add(1, std::memory_order_relaxed);
        // The sum is kept in millionths to stay an integer add.
        sum_millionths_.fetch_add(static_cast<std::uint64_t>(std::llround(value * 1e6)),
                                  std::memory_order_relaxed);
    }

    histogram_snapshot snapshot() const {
        histogram_snapshot s;
        s.upper_bounds.assign(bounds_.begin(), bounds_.end());
        std::uint64_t running = 0;
        for (std::size_t i = 0; i <= BucketCount; ++i) {
            running += counts_[i].load(std::memory_order_relaxed);
            s.cumulative.push_back(running);
        }
        s.sum = static_cast<double>(sum_millionths_.load(std::memory_order_relaxed)) / 1e6;
        return s;
    }

private:
    std::array<double, BucketCount> bounds_;
    std::array<std::atomic<std::uint64_t>, BucketCount + 1> counts_{};
    std::atomic<std::uint64_t> sum_millionths_{0};
};

/// Bounds for waits and durations in seconds: 10 µs … 10 s.
inline constexpr std::array<double, 13> seconds_buckets{1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 0.01,
                                                        0.05, 0.1,  0.5,  1.0,  5.0,  10.0};
/// Bounds for ratios in [0, 1].
inline constexpr std::array<double, 10> ratio_buckets{0.01, 0.05, 0.1, 0.2,  0.3,
                                                      0.5,  0.7,  0.9, 0.99, 1.0};

using seconds_histogram = atomic_histogram<seconds_buckets.size()>;
using ratio_histogram = atomic_histogram<ratio_buckets.size()>;

} // namespace sluice::runtime
