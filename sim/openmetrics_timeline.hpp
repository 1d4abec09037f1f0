#pragma once
/// The metrics timeline of a simulated run (`sluice-sim --openmetrics`): the production
/// collector's families sampled in virtual time, written as OpenMetrics with timestamps so that
/// `promtool tsdb create-blocks-from openmetrics` loads a simulated incident into Prometheus.

#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include <prometheus/metric_family.h>

namespace sluice::sim {

/// Collects the samples and writes them: one family after another, each with all its samples in
/// time order, then `# EOF`.
class openmetrics_timeline {
public:
    /// Virtual time 0 is placed at this Unix time so the blocks land in a sensible window.
    static constexpr double epoch_seconds = 1'700'000'000.0;

    void record(double virtual_seconds, std::vector<prometheus::MetricFamily> families) {
        frames_.push_back({epoch_seconds + virtual_seconds, std::move(families)});
    }
    /// Writes the file; false when nothing was recorded or the file cannot be written.
    bool write(const std::string& path) const;

private:
    struct sample_frame {
        double timestamp;
        std::vector<prometheus::MetricFamily> families;
    };

    static std::string labels(const prometheus::ClientMetric& m, const std::string& extra = {});
    static void write_metric(std::FILE* out, const prometheus::MetricFamily& family,
                             const prometheus::ClientMetric& m, double ts);

    std::vector<sample_frame> frames_;
};

} // namespace sluice::sim
