import Testing
@testable import MultiServer
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Per-stack options and stream metadata through the Swift API (plugin seam 0.2).
struct SeamTests {
    @Test func perStackOptionsReachTheProtocols() async throws {
        let ms = try MultiServer(keys: .generate())
        // A misspelt key is an error naming the known ones.
        let misspelt = Result { try ms.listen(["net:127.0.0.1:0~shs"],
                                              options: ["shs.handshake_timout_ms": "5"]) { _ in } }
        if case .failure(let err) = misspelt, let e = err as? MultiServerError {
            #expect(e.matches(.invalidArgument))
            #expect(e.reason?.contains("handshake_timeout_ms") == true)
        } else {
            Issue.record("a misspelt option must fail")
        }
        // A malformed key too.
        let malformed = Result { try ms.listen(["net:127.0.0.1:0~shs"], options: ["nodot": "1"]) { _ in } }
        if case .failure(let err) = malformed, let e = err as? MultiServerError {
            #expect(e.matches(.invalidArgument))
        } else {
            Issue.record("a key without protocol must fail")
        }
        // A real option: the client's handshake gives up after 300 ms on a
        // server that accepts TCP but never answers (plain net, no shs).
        let silent = try ms.listen(["net:127.0.0.1:0"]) { _ in }
        let port = silent.address.split(separator: ":").last!
        let key = try KeyPair.generate().publicKey
        let b64 = KeyPair.id(of: key).dropFirst().dropLast(".ed25519".count)
        let clock = ContinuousClock()
        let start = clock.now
        var failure: MultiServerError?
        do {
            _ = try await ms.connect("net:127.0.0.1:\(port)~shs:\(b64)",
                                     options: ["shs.handshake_timeout_ms": "300"])
        } catch {
            failure = error as? MultiServerError
        }
        #expect(failure?.matches(.timedOut) == true)
        #expect(clock.now - start < .seconds(3))
        await ms.shutdown()
    }

    @Test func metadataAndRemoteIdentity() async throws {
        let ms = try MultiServer(keys: .generate())
        let accepted = Collected<Connection>()
        let server = try ms.listen(["net:localhost:0~shs"]) { conn in accepted.append(conn) }
        let conn = try await ms.connect(server.address)
        #expect(conn.metadata("host") == "localhost")
        #expect(conn.metadata("port") != nil)
        #expect(conn.remoteIdentity?.kind == "ed25519")
        #expect(conn.remoteIdentity?.bytes == ms.publicKey)
        #expect(conn.remoteKey == ms.publicKey)
        await conn.close()
        await ms.shutdown()
    }
}

struct ScopeAndStatsTests {
    @Test func addressesPerScopeAndCounters() async throws {
        let ms = try MultiServer(keys: .generate())
        let server = try ms.listen(["net:0.0.0.0:0~shs"]) { conn in
            Task { await conn.close() }
        }
        let device = server.addresses(scope: .device)
        #expect(device.count == 1)
        #expect(device.first?.hasPrefix("net:127.0.0.1:") == true)
        #expect(!server.addresses(scope: .public).contains { $0.contains("0.0.0.0") })
        let conn = try await ms.connect(device[0])
        await conn.close()
        for _ in 0..<50 where ms.stats.accepted < 1 { try await Task.sleep(for: .milliseconds(10)) }
        #expect(ms.stats.accepted == 1)
        await ms.shutdown()
    }
}

struct HTTPAndCountsTests {
    @Test func httpHandlerAndByteCounts() async throws {
        let ms = try MultiServer(keys: .generate())
        try ms.setHTTPHandler { request in
            request.path == "/" ? .html("<p>hello \(request.method)</p>") : .notFound
        }
        let server = try ms.listen(["ws://127.0.0.1:0"]) { conn in
            Task {
                for try await chunk in conn { try await conn.write(chunk) }
                try? await conn.shutdownWrite()
            }
        }
        // A plain HTTP GET on the ws port reaches the closure.
        let port = Int(server.address.split(separator: ":").last!)!
        let page = try await httpGet(port: port, path: "/")
        #expect(page.hasPrefix("HTTP/1.1 200"))
        #expect(page.contains("<p>hello GET</p>"))
        let missing = try await httpGet(port: port, path: "/nope")
        #expect(missing.hasPrefix("HTTP/1.1 404"))
        // Byte counts and timings of a connection.
        let conn = try await ms.connect(server.address)
        try await conn.write(Array("12345".utf8))
        try await conn.shutdownWrite()
        var got: [UInt8] = []
        for try await chunk in conn { got += chunk }
        #expect(got == Array("12345".utf8))
        #expect(conn.byteCounts.received == 5)
        #expect(conn.byteCounts.sent == 5)
        #expect(conn.metadata("time.total_ms") != nil)
        await conn.close()
        await ms.shutdown()
    }
}

/// A minimal HTTP/1.1 GET over a blocking socket, in a detached task.
private func httpGet(port: Int, path: String) async throws -> String {
    try await Task.detached {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_port = in_port_t(UInt16(port).bigEndian)
        sa.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &sa) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard rc == 0 else { return "connect failed" }
        let req = "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        _ = req.withCString { send(fd, $0, strlen($0), 0) }
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = recv(fd, &buf, buf.count, 0)
            if n <= 0 { break }
            out += buf[0..<n]
        }
        return String(decoding: out, as: UTF8.self)
    }.value
}

struct ReadmeStacksSnippet {
    @Test func readmeStacksSnippet() async throws {
        let ms = try MultiServer(keys: .generate())
        try ms.setHTTPHandler { req in req.path == "/" ? .html("<script>/* new WebSocket(…) */</script>") : .notFound }
        let server = try ms.listen(["net:127.0.0.1:0~shs", "net:127.0.0.1:0~noise", "ws://127.0.0.1:0~shs"]) { conn in
            Task { try await conn.executeThenClose { c in for try await chunk in c { try await c.write(chunk) } } }
        }
        var kinds: [String] = []
        for address in server.address.split(separator: ";").map(String.init) {   // a client over each
            try await ms.withConnection(to: address) { conn in
                try await conn.write("hi".utf8)
                kinds.append(conn.remoteIdentity?.kind ?? "-")
                #expect(conn.metadata("time.total_ms") != nil)
            }
        }
        #expect(kinds == ["ed25519", "ed25519", "ed25519"])
        #expect(server.addresses(scope: .device).count == 3)
        await ms.shutdown()
    }
}
