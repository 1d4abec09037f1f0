#include "sluice/pipeline/stage.hpp"

namespace sluice::runtime {

namespace {

class csv_field_count final : public stage {
public:
    std::string_view name() const noexcept override { return "csv_fields"; }

    void process(const framer& records_format, data_event& event) override {
        constexpr std::byte comma{','};
        std::uint64_t records = event.record_count;
        if (!event.spanning_record.empty()) {
            event.field_count += records_format.count_in_payloads(event.spanning_record, comma) + 1;
            --records;
        }
        event.field_count += records_format.count_in_payloads(event.records, comma) + records;
    }
};

} // namespace

std::shared_ptr<stage> count_csv_fields() {
    static const auto instance = std::make_shared<csv_field_count>();
    return instance;
}

} // namespace sluice::runtime
