#pragma once
/// Throwaway certificates for TLS tests and benchmarks, made with the `openssl` command at test
/// time (nothing secret is committed): a CA, a server certificate for localhost and 127.0.0.1
/// signed by it, a client certificate, the same server again from a second CA nobody trusts, and an
/// expired server certificate. Made once per test process, in a directory removed at its end; the
/// files are world-readable (mosquitto, started as root, drops to its own user to read them).
/// No GoogleTest here, so bench/ can use it: `ok` and `problem` say whether openssl did it all.

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "testing/process.hpp"

namespace sluice::test {

struct certificates {
    std::string dir;
    bool ok = true;
    std::string problem; ///< the first openssl failure, with its stderr
    certificates() {
        dir = temp_directory() + "/sluice_tls_" + std::to_string(::getpid());
        std::filesystem::create_directories(dir);
        std::filesystem::permissions(dir, std::filesystem::perms::all);
        std::ofstream(dir + "/server.ext") << "subjectAltName=DNS:localhost,IP:127.0.0.1\n";
        std::ofstream(dir + "/client.ext") << "extendedKeyUsage=clientAuth\n";
        for (const std::string ca : {"ca", "other_ca"}) {
            openssl({"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                     "-nodes", "-keyout", path(ca + ".key"), "-out", path(ca + ".pem"), "-days",
                     "2", "-subj", "/CN=sluice test " + ca});
        }
        issue("server", "ca", "localhost", "server.ext", "2");
        issue("client", "ca", "sluice-client", "client.ext", "2");
        issue("other_server", "other_ca", "localhost", "server.ext", "2");
        issue("expired", "ca", "localhost", "server.ext", "-1");
        for (const auto& file : std::filesystem::directory_iterator(dir)) {
            std::filesystem::permissions(file.path(), std::filesystem::perms::owner_read |
                                                          std::filesystem::perms::owner_write |
                                                          std::filesystem::perms::group_read |
                                                          std::filesystem::perms::others_read);
        }
    }
    ~certificates() { std::filesystem::remove_all(dir); }
    certificates(const certificates&) = delete;
    certificates& operator=(const certificates&) = delete;
    std::string path(const std::string& name) const { return dir + "/" + name; }

private:
    void issue(const std::string& name, const std::string& ca, const std::string& cn,
               const std::string& ext, const std::string& days) {
        openssl({"req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", path(name + ".key"), "-out", path(name + ".csr"), "-subj",
                 "/CN=" + cn});
        openssl({"x509", "-req", "-in", path(name + ".csr"), "-CA", path(ca + ".pem"), "-CAkey",
                 path(ca + ".key"), "-CAcreateserial", "-out", path(name + ".pem"), "-days", days,
                 "-extfile", path(ext)});
    }
    void openssl(std::vector<std::string> args) {
        static int calls = 0;
        args.insert(args.begin(), "/usr/bin/openssl");
        child_process c(args,
                        "openssl_" + std::to_string(::getpid()) + "_" + std::to_string(++calls));
        if (c.wait(std::chrono::seconds(30)) != 0 && ok) {
            ok = false;
            problem = "openssl " + args[1] + " failed: " + c.err();
        }
    }
};

/// This process's certificates, made on first use.
inline const certificates& certs() {
    static const certificates made;
    return made;
}

} // namespace sluice::test
