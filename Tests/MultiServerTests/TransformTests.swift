import Testing
@testable import MultiServer

/// A toy transform written in Swift: every byte xor a key, both ways.
struct XorTransform: StreamTransform {
    let name = "xorswift"
    let key: UInt8

    func makeSession(isServer: Bool) -> any TransformSession { Session(key: key) }

    final class Session: TransformSession {
        let key: UInt8
        private(set) var encoded = 0
        init(key: UInt8) { self.key = key }
        func encode(_ bytes: [UInt8]) -> [UInt8] { encoded += bytes.count; return bytes.map { $0 ^ key } }
        func decode(_ bytes: [UInt8]) -> [UInt8] { bytes.map { $0 ^ key } }
    }
}

@Suite(.timeLimit(.minutes(1)))
struct TransformTests {
    /// Stacked on net and under shs, next to the built-ins.
    @Test func swiftTransformUnderSHS() async throws {
        let server = MultiServer()
        let client = MultiServer()
        try server.register(XorTransform(key: 0x5A))
        try client.register(XorTransform(key: 0x5A))
        let listener = try server.listen(["net:127.0.0.1:0~xorswift~shs"], onConnection: echo)
        #expect(listener.address.contains("~xorswift~shs:"))
        let conn = try await client.connect(listener.address)
        #expect(conn.remoteKey == server.publicKey)
        #expect(conn.address.contains("~xorswift~shs"))
        let data = testBytes(500_000, seed: 3)
        #expect(try await exchange(conn, data) == data)
        // Without the transform the handshake bytes are garbage: it fails.
        let transport = listener.address.split(separator: "~")[0]
        let shs = listener.address.split(separator: "~")[2]
        await #expect(throws: MultiServerError.self) {
            _ = try await client.connect("\(transport)~\(shs)", options: ["shs.handshake_timeout_ms": "1000"])
        }
        // The name is taken now.
        #expect { try client.register(XorTransform(key: 1)) } throws: { MultiServerError.alreadyExists ~= $0 }
        await client.shutdown()
        await server.shutdown()
        #expect(server.loop.deleteStatus.withLock { $0 } == 0)
        #expect(client.loop.deleteStatus.withLock { $0 } == 0)
    }
}
