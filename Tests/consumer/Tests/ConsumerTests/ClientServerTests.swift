import Testing
import MultiServer

/// Only the public API: a server and a client over shs, then a refused
/// client and an error compared by code.
@Suite(.timeLimit(.minutes(1)))
struct ClientServerTests {
    @Test func echoOverSHS() async throws {
        let serverKeys = try KeyPair.generate()
        try await MultiServer.withMultiServer(keys: serverKeys) { server in
            try await server.withListener(["net:127.0.0.1:0~shs"]) { conn in
                #expect(conn.remoteKey != nil)
                for try await chunk in conn { try await conn.write(chunk) }
                try await conn.shutdownWrite()
            } body: { listener in
                try await MultiServer.withMultiServer { client in
                    let payload = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
                    let echoed = try await client.withConnection(to: listener.address) { conn in
                        #expect(conn.remoteKey == serverKeys.publicKey)
                        async let written: Void = {
                            try await conn.write(payload)
                            try await conn.shutdownWrite()
                        }()
                        var received: [UInt8] = []
                        for try await chunk in conn { received += chunk }
                        try await written
                        return received
                    }
                    #expect(echoed == payload)
                }
            }
        }
    }

    @Test func wrongServerKeyIsAHandshakeFailure() async throws {
        try await MultiServer.withMultiServer { ms in
            try await ms.withListener(["net:127.0.0.1:0~shs"]) { _ in } body: { listener in
                let transport = listener.address.split(separator: "~")[0]
                let other = try KeyPair.generate().publicKeyBase64
                do {
                    _ = try await ms.connect("\(transport)~shs:\(other)")
                    Issue.record("connected with a wrong key")
                } catch let error as MultiServerError {
                    #expect(error == .handshakeFailed, "\(error)")
                }
            }
        }
    }
}
