#include "sim/openmetrics_timeline.hpp"

#include <cmath>

namespace sluice::sim {

bool openmetrics_timeline::write(const std::string& path) const {
    std::FILE* out = std::fopen(path.c_str(), "w");
    if (out == nullptr || frames_.empty()) {
        if (out != nullptr) {
            std::fclose(out);
        }
        return false;
    }
    const auto& first = frames_.front().families;
    for (std::size_t f = 0; f < first.size(); ++f) {
        const auto& family = first[f];
        std::string name = family.name;
        const char* type = "gauge";
        if (family.type == prometheus::MetricType::Counter) {
            type = "counter";
            name = name.substr(0, name.size() - 6); // the family, without _total
        } else if (family.type == prometheus::MetricType::Histogram) {
            type = "histogram";
        }
        std::fprintf(out, "# TYPE %s %s\n# HELP %s %s\n", name.c_str(), type, name.c_str(),
                     family.help.c_str());
        for (const auto& frame : frames_) {
            if (f >= frame.families.size()) {
                continue;
            }
            for (const auto& m : frame.families[f].metric) {
                write_metric(out, frame.families[f], m, frame.timestamp);
            }
        }
    }
    std::fprintf(out, "# EOF\n");
    return std::fclose(out) == 0;
}

std::string openmetrics_timeline::labels(const prometheus::ClientMetric& m,
                                         const std::string& extra) {
    std::string text;
    for (const auto& l : m.label) {
        text += (text.empty() ? "" : ",") + l.name + "=\"" + l.value + "\"";
    }
    if (!extra.empty()) {
        text += (text.empty() ? "" : ",") + extra;
    }
    return text.empty() ? "" : "{" + text + "}";
}

void openmetrics_timeline::write_metric(std::FILE* out, const prometheus::MetricFamily& family,
                                        const prometheus::ClientMetric& m, double ts) {
    switch (family.type) {
    case prometheus::MetricType::Counter:
        std::fprintf(out, "%s%s %.17g %.3f\n", family.name.c_str(), labels(m).c_str(),
                     m.counter.value, ts);
        break;
    case prometheus::MetricType::Histogram:
        for (const auto& bucket : m.histogram.bucket) {
            const std::string le = std::isinf(bucket.upper_bound)
                                       ? std::string("+Inf")
                                       : std::to_string(bucket.upper_bound);
            std::fprintf(out, "%s_bucket%s %llu %.3f\n", family.name.c_str(),
                         labels(m, "le=\"" + le + "\"").c_str(),
                         static_cast<unsigned long long>(bucket.cumulative_count), ts);
        }
        std::fprintf(out, "%s_count%s %llu %.3f\n", family.name.c_str(), labels(m).c_str(),
                     static_cast<unsigned long long>(m.histogram.sample_count), ts);
        std::fprintf(out, "%s_sum%s %.17g %.3f\n", family.name.c_str(), labels(m).c_str(),
                     m.histogram.sample_sum, ts);
        break;
    default:
        std::fprintf(out, "%s%s %.17g %.3f\n", family.name.c_str(), labels(m).c_str(),
                     m.gauge.value, ts);
        break;
    }
}

} // namespace sluice::sim
