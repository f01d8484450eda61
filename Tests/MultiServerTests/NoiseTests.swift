import Testing
@testable import MultiServer

/// The `noise` transform (Noise IK, spec/noise.md) through the Swift API.
struct NoiseTests {
    @Test func listenOnNoiseConnectAndEcho() async throws {
        let serverKeys = try KeyPair.generate()
        let server = MultiServer(keys: serverKeys)
        let client = MultiServer()
        let accepted = Collected<(isServer: Bool, remoteKey: [UInt8]?)>()
        let listener = try server.listen(["net:127.0.0.1:0~noise"]) { connection in
            accepted.append((connection.isServer, connection.remoteKey))
            echo(connection)
        }
        #expect(listener.address.hasPrefix("net:127.0.0.1:"))
        #expect(listener.address.hasSuffix("~noise:\(serverKeys.publicKeyBase64)"))

        let data = testBytes(1024 * 1024 + 123, seed: 11)
        let connection = try await client.connect(listener.address)
        #expect(connection.isServer == false)
        #expect(connection.remoteKey == serverKeys.publicKey)
        #expect(connection.remoteIdentity?.kind == "ed25519")
        let echoed = try await exchange(connection, data, chunkSize: 70_000)
        #expect(echoed.count == data.count)
        #expect(checksum(echoed) == checksum(data))
        #expect(accepted.all.count == 1)
        #expect(accepted.all.first?.isServer == true)
        #expect(accepted.all.first?.remoteKey == client.publicKey)
        await client.shutdown()
        await server.shutdown()
    }

    @Test func shsAndNoiseOnOneServer() async throws {
        let server = MultiServer()
        let client = MultiServer()
        let listener = try server.listen(["net:127.0.0.1:0~shs", "net:127.0.0.1:0~noise"],
                                         onConnection: echo)
        let alts = alternatives(listener.address)
        #expect(alts.count == 2)
        #expect(alts.last?.contains("~noise:") == true)
        for address in alts {
            let connection = try await client.connect(address)
            let echoed = try await exchange(connection, Array("over \(address)".utf8))
            #expect(echoed == Array("over \(address)".utf8))
        }
        await client.shutdown()
        await server.shutdown()
    }

    @Test func wrongNoiseKeyFailsAndTheServerKeepsServing() async throws {
        let server = MultiServer()
        let client = MultiServer()
        let listener = try server.listen(["net:127.0.0.1:0~noise"], onConnection: echo)
        let transport = String(listener.address.split(separator: "~")[0])
        let wrongKey = try KeyPair.generate().publicKeyBase64
        do {
            _ = try await client.connect("\(transport)~noise:\(wrongKey)")
            Issue.record("handshake with a wrong key succeeded")
        } catch let error as MultiServerError {
            #expect(error.matches(.handshakeFailed), "\(error)")
            #expect(error.reason?.contains("server hung up after msg1") == true, "\(error)")
        }
        let connection = try await client.connect(listener.address)
        let echoed = try await exchange(connection, Array("still here".utf8))
        #expect(echoed == Array("still here".utf8))
        await client.shutdown()
        await server.shutdown()
    }
}
