#pragma once
/// An in-process worker for tests: sluice::worker with a recording sink, and the four parts
/// under the names the tests use.

#include "sluice/worker.hpp"
#include "testing/recording_sink.hpp"

namespace sluice::test {

struct test_worker {
    explicit test_worker(runtime::pool_config pool_config = {512, 4096, 8, 8192},
                         runtime::production_options threads = {2, 2, 2},
                         runtime::server_options server_options = {},
                         runtime::processing_options processing_options = {})
        : core(sink, {pool_config, threads, processing_options, server_options}), pool(core.pool()),
          env(core.environment()), pipeline(core.pipeline()), server(core.server()) {}

    recording_sink sink; ///< declared first: it outlives the worker
    sluice::worker core;
    runtime::buffer_pool& pool;
    runtime::production_environment& env;
    runtime::processing& pipeline;
    runtime::source_server& server;
};

} // namespace sluice::test
