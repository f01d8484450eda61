import Testing
@testable import MultiServer

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
