#pragma once
/// An in-process worker for tests: pool, production environment, processing and server, in the
/// order that makes destruction safe, with a recording sink.

#include <memory>

#include "sluice/pool/buffer_pool.hpp"
#include "sluice/pipeline/processing.hpp"
#include "sluice/env/production_environment.hpp"
#include "sluice/server/source_server.hpp"
#include "testing/recording_sink.hpp"

namespace sluice::test {

struct test_worker {
    explicit test_worker(runtime::pool_config pool_config = {512, 4096, 8, 8192},
                         runtime::production_options threads = {2, 2, 2},
                         runtime::server_options server_options = {},
                         runtime::processing_options processing_options = {})
        : pool(pool_config), env(threads), pipeline(env, pool, sink, processing_options),
          server(env, pool, pipeline, server_options) {}

    ~test_worker() {
        server.shutdown();
        pipeline.wait_idle();
    }

    recording_sink sink;
    runtime::buffer_pool pool;
    runtime::production_environment env;
    runtime::processing pipeline;
    runtime::source_server server;
};

} // namespace sluice::test
