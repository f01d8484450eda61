
import Testing
@testable import MultiServer

@Suite(.timeLimit(.minutes(2)))
struct MultiServerTests {

    @Test func listensOnNetUnixAndShsAtOnceAndEchoesOverEach() async throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        let serverKeys = try KeyPair.generate()
        let server = MultiServer(keys: serverKeys)
        let client = MultiServer()
        let accepted = Collected<(stack: String?, isServer: Bool, remoteKey: [UInt8]?)>()
        let listener = try server.listen(
            ["net:127.0.0.1:0", "unix:\(dir)/ms.sock", "net:127.0.0.1:0~shs"]
        ) { connection in
            accepted.append((connection.stack, connection.isServer, connection.remoteKey))
            echo(connection)
        }
        let alts = alternatives(listener.address)
        #expect(alts.count == 3)
        #expect(alts[0].hasPrefix("net:127.0.0.1:"))
        #expect(alts[1] == "unix:\(dir)/ms.sock")
        #expect(alts[2].hasSuffix("~shs:\(serverKeys.publicKeyBase64)"))
        #expect(port(of: alts[0]) != 0 && port(of: alts[0]) != port(of: alts[2]))

        // Plain net and unix: 256 KiB each.
        for address in alts[0...1] {
            let data = testBytes(256 * 1024, seed: 7)
            let connection = try await client.connect(address)
            #expect(connection.isServer == false)
            #expect(connection.remoteKey == nil)
            #expect(connection.stack == nil)
            let echoed = try await exchange(connection, data)
            #expect(echoed.count == data.count)
            #expect(checksum(echoed) == checksum(data))
        }

        // shs: a little over 1 MiB, with uneven chunk sizes.
        let data = testBytes(1_048_576 + 12345, seed: 11)
        let connection = try await client.connect(alts[2])
        #expect(connection.remoteKey == serverKeys.publicKey)
        #expect(connection.remoteID == serverKeys.id)
        #expect(connection.address.hasPrefix("net:127.0.0.1:"))
        #expect(connection.address.contains("~shs:"))
        let echoed = try await exchange(connection, data, chunkSize: 10_000)
        #expect(echoed.count == data.count)
        #expect(checksum(echoed) == checksum(data))

        let seen = accepted.all
        #expect(seen.count == 3)
        #expect(seen.allSatisfy { $0.isServer })
        #expect(seen.contains { $0.stack == alts[1] && $0.remoteKey == nil })
        #expect(seen.contains { $0.stack == alts[2] && $0.remoteKey == client.publicKey })

        await listener.close()
        await client.shutdown()
        await server.shutdown()
        #expect(server.loop.deleteStatus.withLock { $0 } == 0)
        #expect(client.loop.deleteStatus.withLock { $0 } == 0)
    }

    @Test func onDataDeliversChunksThenCleanEnd() async throws {
        let server = MultiServer()
        let client = MultiServer()
        let payload = testBytes(300_000, seed: 3)
        let listener = try server.listen(["net:127.0.0.1:0~shs"]) { connection in
            Task {
                try? await connection.write(payload)
                try? await connection.shutdownWrite()
            }
        }
        let connection = try await client.connect(listener.address)
        let received = Collected<[UInt8]>()
        let ended = Signal()
        let failures = Collected<MultiServerError>()
        connection.onData { result in
            switch result {
            case .success(let chunk?): received.append(chunk)
            case .success(nil): ended.fire()
            case .failure(let error): failures.append(error); ended.fire()
            }
        }
        await ended.wait()
        #expect(failures.all.isEmpty)
        let all = received.all.flatMap { $0 }
        #expect(checksum(all) == checksum(payload))
        await connection.close()
        await client.shutdown()
        await server.shutdown()
    }

    @Test(arguments: ["net:127.0.0.1:0", "net:127.0.0.1:0~shs"])
    func slowAsyncSequenceConsumerGetsEverything(_ stack: String) async throws {
        let server = MultiServer()
        let client = MultiServer()
        let payload = testBytes(6 * 1024 * 1024, seed: 5)
        let writerDone = Signal()
        let listener = try server.listen([stack]) { connection in
            Task {
                // One big write: it completes only once the peer has read most of it.
                try? await connection.write(payload)
                try? await connection.shutdownWrite()
                writerDone.fire()
            }
        }
        let connection = try await client.connect(listener.address)
        var total: [UInt8] = []
        var chunks = 0
        for try await chunk in connection.bytes {
            total += chunk
            chunks += 1
            if chunks % 8 == 0 { try await Task.sleep(for: .milliseconds(5)) }
        }
        #expect(total.count == payload.count)
        #expect(checksum(total) == checksum(payload))
        await writerDone.wait()
        await connection.close()
        await client.shutdown()
        await server.shutdown()
    }

    @Test(arguments: ["net:127.0.0.1:0", "net:127.0.0.1:0~shs", "unix", "unix~noauth"])
    func halfCloseDeliversRemainingDataThenEnd(_ stack: String) async throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        let listenAddress = stack.hasPrefix("unix")
            ? "unix:\(dir)/half.sock" + stack.dropFirst("unix".count) : stack
        let server = MultiServer()
        let client = MultiServer()
        let listener = try server.listen([listenAddress]) { connection in
            // Reads the whole request (until the client's shutdownWrite), then answers.
            Task {
                do {
                    let request = try await readAll(connection)
                    try await connection.write(Array("reply to ".utf8) + request)
                    try await connection.write(testBytes(200_000, seed: 9))
                    try await connection.shutdownWrite()
                } catch {
                    Issue.record("server: \(error)")
                }
                await connection.close()
            }
        }
        let connection = try await client.connect(listener.address)
        try await connection.write(Array("hello".utf8))
        try await connection.shutdownWrite()
        // The write side is shut: writing again fails.
        await #expect {
            try await connection.write([1])
        } throws: { MultiServerError.writeShutDown ~= $0 }
        let reply = try await readAll(connection)
        let head = Array("reply to hello".utf8)
        #expect(Array(reply.prefix(head.count)) == head)
        #expect(checksum(Array(reply.dropFirst(head.count))) == checksum(testBytes(200_000, seed: 9)))
        await connection.close()
        await client.shutdown()
        await server.shutdown()
    }

    @Test func connectionRefusedMapsToErrorWithReason() async throws {
        let ms = MultiServer()
        // Find a port nobody listens on: listen on port 0, then stop.
        let listener = try ms.listen(["net:127.0.0.1:0"]) { _ in }
        let address = listener.address
        await listener.close()
        do {
            _ = try await ms.connect(address)
            Issue.record("connected to a closed port")
        } catch MultiServerError.connectionRefused {
            // expected
        } catch {
            Issue.record("unexpected error: \(error)")
        }
        do {
            _ = try await ms.connect(address)
        } catch let error as MultiServerError {
            #expect(error.rawValue == MultiServerError.connectionRefused.rawValue)
            #expect(error.operation == .connect)
            #expect(error.name == "ECONNREFUSED")
            let reason = try #require(error.reason)
            #expect(reason.contains("\(port(of: address)!)"))
            #expect(error.description.contains("connect: "))
        }
        await ms.shutdown()
    }

    @Test func malformedAndUnknownAddressesAreReported() async throws {
        let ms = MultiServer()
        await #expect {
            _ = try await ms.connect("net:127.0.0.1:8008~")
        } throws: { error in
            guard let error = error as? MultiServerError else { return false }
            return MultiServerError.malformedAddress ~= error && error.reason?.contains("offset") == true
        }
        await #expect {
            _ = try await ms.connect("carrier-pigeon:coop:1")
        } throws: { error in
            MultiServerError.unknownProtocol ~= error
        }
        #expect {
            _ = try ms.listen(["net:127.0.0.1:0", "Net:bad"]) { _ in }
        } throws: { error in
            guard let error = error as? MultiServerError else { return false }
            return MultiServerError.malformedAddress ~= error && error.operation == .listen
        }
        #expect {
            _ = try ms.listen(["net:127.0.0.1:0~nosuchtransform"]) { _ in }
        } throws: { error in
            guard let error = error as? MultiServerError else { return false }
            return MultiServerError.unknownProtocol ~= error
                && error.reason?.contains("nosuchtransform") == true
        }
        await ms.shutdown()
        #expect(ms.loop.deleteStatus.withLock { $0 } == 0)
    }

    @Test func wrongShsKeyFailsTheHandshakeAndTheServerKeepsServing() async throws {
        let server = MultiServer()
        let client = MultiServer()
        let serverErrors = Collected<MultiServerError>()
        let listener = try server.listen(["net:127.0.0.1:0~shs"], onError: { serverErrors.append($0) },
                                         onConnection: echo)
        let transport = String(listener.address.split(separator: "~")[0])
        let wrongKey = try KeyPair.generate().publicKeyBase64
        do {
            _ = try await client.connect("\(transport)~shs:\(wrongKey)")
            Issue.record("handshake with a wrong key succeeded")
        } catch let error as MultiServerError {
            #expect(error.matches(.handshakeFailed), "\(error)")
            #expect(error.operation == .connect)
            #expect(error.reason?.contains("shs") == true, "\(error)")
        }
        // The server keeps serving.
        let connection = try await client.connect(listener.address)
        let echoed = try await exchange(connection, Array("still here".utf8))
        #expect(echoed == Array("still here".utf8))
        // And it reported the failed handshake.
        #expect(serverErrors.all.contains { $0.matches(.handshakeFailed) && $0.operation == .accept })
        await client.shutdown()
        await server.shutdown()
    }

    @Test func wrongAppKeyFailsTheHandshake() async throws {
        let server = MultiServer(appKey: try AppKey(bytes: Array(repeating: 7, count: 32)))
        let client = MultiServer()
        let listener = try server.listen(["net:127.0.0.1:0~shs"], onConnection: echo)
        await #expect {
            _ = try await client.connect(listener.address)
        } throws: { error in
            MultiServerError.handshakeFailed ~= error
        }
        await client.shutdown()
        await server.shutdown()
    }

    @Test func authorizeHookRejects() async throws {
        let asked = Collected<[UInt8]>()
        let serverErrors = Collected<MultiServerError>()
        let server = MultiServer(authorize: { key in
            asked.append(key)
            return false
        })
        let client = MultiServer()
        let listener = try server.listen(["net:127.0.0.1:0~shs"], onError: { serverErrors.append($0) }) { _ in
            Issue.record("a rejected client got through")
        }
        do {
            _ = try await client.connect(listener.address)
            Issue.record("connected although rejected")
        } catch let error as MultiServerError {
            // The client only sees the server hang up after msg3.
            #expect(error.matches(.handshakeFailed), "\(error)")
            #expect(error.reason?.contains("not authorized") == true, "\(error)")
        }
        #expect(asked.all == [client.publicKey])
        #expect(serverErrors.all.contains { $0.matches(.unauthorized) }, "\(serverErrors.all)")
        await client.shutdown()
        await server.shutdown()
    }

    @Test func authorizeHookAccepts() async throws {
        let server = MultiServer(authorize: { _ in
            try? await Task.sleep(for: .milliseconds(20))
            return true
        })
        let client = MultiServer()
        let listener = try server.listen(["net:127.0.0.1:0~shs"], onConnection: echo)
        let connection = try await client.connect(listener.address)
        let data = testBytes(100_000)
        #expect(try await exchange(connection, data) == data)
        await client.shutdown()
        await server.shutdown()
    }

    @Test func cancellingAPendingConnect() async throws {
        let hookCalled = Signal()
        let release = Signal()
        let server = MultiServer(handshakeTimeout: .seconds(60), authorize: { _ in
            hookCalled.fire()
            await release.wait()  // never answers until the test says so
            return false
        })
        let client = MultiServer(handshakeTimeout: .seconds(60))
        let listener = try server.listen(["net:127.0.0.1:0~shs"]) { _ in }
        let address = listener.address
        let attempt = Task { try await client.connect(address) }
        await hookCalled.wait()
        let start = ContinuousClock.now
        attempt.cancel()
        let result = await attempt.result
        #expect(ContinuousClock.now - start < .seconds(5))
        switch result {
        case .success: Issue.record("connect succeeded")
        case .failure(let error):
            #expect(MultiServerError.canceled ~= error, "\(error)")
        }
        // A task cancelled before it starts connecting is canceled too.
        let early = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return try await client.connect(address)
        }
        await #expect { _ = try await early.value } throws: { MultiServerError.canceled ~= $0 }

        release.fire()
        await client.shutdown()
        await server.shutdown()
        #expect(server.loop.deleteStatus.withLock { $0 } == 0)
    }

    @Test func shutdownClosesOpenConnectionsAndPendingWork() async throws {
        let hookCalled = Signal()
        let server = MultiServer(handshakeTimeout: .seconds(60), authorize: { key in
            hookCalled.fire()
            try? await Task.sleep(for: .seconds(3600))
            return true
        })
        let client = MultiServer(handshakeTimeout: .seconds(60))
        let serverSide = Collected<Connection>()
        let open = try server.listen(["net:127.0.0.1:0"]) { serverSide.append($0) }
        let hanging = try server.listen(["net:127.0.0.1:0~shs"]) { _ in }
        let connection = try await client.connect(open.address)
        let pending = Task { try await client.connect(hanging.address) }
        await hookCalled.wait()

        await client.shutdown()
        await #expect(throws: (any Error).self) { _ = try await pending.value }
        await #expect {
            try await connection.write([1, 2, 3])
        } throws: { MultiServerError.closed ~= $0 }
        await #expect {
            _ = try await client.connect(open.address)
        } throws: { MultiServerError.closed ~= $0 }
        #expect(throws: MultiServerError.self) { _ = try client.listen(["net:127.0.0.1:0"]) { _ in } }
        await connection.close()  // harmless after shutdown
        await client.shutdown()   // idempotent

        await server.shutdown()   // rejects the pending authorization, closes the accepted stream
        #expect(server.loop.deleteStatus.withLock { $0 } == 0)
        #expect(client.loop.deleteStatus.withLock { $0 } == 0)
    }

    @Test func synchronousCloseAndDeinit() async throws {
        var ms: MultiServer? = MultiServer()
        let listener = try ms!.listen(["net:127.0.0.1:0"]) { _ in }
        #expect(listener.address.hasPrefix("net:127.0.0.1:"))
        ms!.close()
        ms!.close()
        ms = nil
        // Dropped without shutdown: shuts down on its own.
        _ = MultiServer()
    }

    @Test func keyPairSecretFileRoundTrip() throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        let keys = try KeyPair.generate()
        #expect(keys.publicKey.count == 32)
        #expect(keys.id.hasPrefix("@") && keys.id.hasSuffix("=.ed25519") && keys.id.count == 53)
        let path = "\(dir)/secret"
        try keys.save(to: path)
        let loaded = try KeyPair(secretFile: path)
        #expect(loaded == keys)
        #expect(loaded.id == keys.id)
        #expect(!"\(keys)".contains(KeyPair.base64(of: keys.withCKeyPair { kp in withUnsafeBytes(of: kp.pointee.secret_key) { Array($0.prefix(32)) } })))
        // Saving never overwrites.
        #expect(throws: MultiServerError.self) { try keys.save(to: path) }
        do { try keys.save(to: path) } catch { #expect(MultiServerError.alreadyExists ~= error) }
        do {
            _ = try KeyPair(secretFile: "\(dir)/missing")
            Issue.record("loaded a missing file")
        } catch MultiServerError.noSuchFile {
        } catch { Issue.record("\(error)") }

        let seed = [UInt8](repeating: 42, count: 32)
        #expect(try KeyPair(seed: seed) == KeyPair(seed: seed))
        #expect(throws: MultiServerError.self) { _ = try KeyPair(seed: [1, 2, 3]) }

        let ms = MultiServer(keys: keys)
        #expect(ms.publicKey == keys.publicKey)
        #expect(ms.id == keys.id)
        ms.close()
    }

    @Test func appKeys() throws {
        #expect(AppKey.scuttlebutt.base64 == "1KHLiKZvAvjbY1ziZEHMXawbCEIM6qwjCDm3VYRan/s=")
        #expect(try AppKey(base64: "1KHLiKZvAvjbY1ziZEHMXawbCEIM6qwjCDm3VYRan/s=") == .scuttlebutt)
        #expect(throws: MultiServerError.self) { _ = try AppKey(base64: "not base64") }
    }

    @Test func errorDescriptions() {
        let e = MultiServerError(rawValue: MultiServerError.handshakeFailed.rawValue,
                                 reason: "shs: bad msg2", operation: .connect)
        #expect(e.description == "connect: handshake failed (MS_EHANDSHAKE): shs: bad msg2")
        #expect(MultiServerError.connectionRefused.name == "ECONNREFUSED")
        #expect(MultiServerError.timedOut ~= MultiServerError(rawValue: -110))
        #expect(!(MultiServerError.timedOut ~= MultiServerError.canceled))
        switch e {
        case .timedOut: Issue.record("wrong match")
        case .handshakeFailed: break
        default: Issue.record("no match")
        }
    }
}
