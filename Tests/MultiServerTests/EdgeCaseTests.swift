import Testing
@testable import MultiServer

@Suite(.timeLimit(.minutes(2)))
struct EdgeCaseTests {

    @Test func handshakeTimeoutMapsToTimedOut() async throws {
        let server = MultiServer()
        let client = MultiServer(handshakeTimeout: .milliseconds(300))
        // A plain TCP listener that accepts and never speaks shs.
        let silent = try server.listen(["net:127.0.0.1:0"]) { _ in }
        let key = try KeyPair.generate().publicKeyBase64
        let start = ContinuousClock.now
        do {
            _ = try await client.connect("\(silent.address)~shs:\(key)")
            Issue.record("handshake with a silent server succeeded")
        } catch MultiServerError.timedOut {
            #expect(ContinuousClock.now - start < .seconds(5))
        } catch {
            Issue.record("unexpected: \(error)")
        }
        await client.shutdown()
        await server.shutdown()
    }

    @Test func manyConcurrentShsConnections() async throws {
        let server = MultiServer()
        let client = MultiServer()
        let listener = try server.listen(["net:127.0.0.1:0~shs"], onConnection: echo)
        let address = listener.address
        try await withThrowingTaskGroup(of: Bool.self) { group in
            for i in 0..<40 {
                group.addTask {
                    let data = testBytes(20_000 + i * 97, seed: UInt64(i + 1))
                    let connection = try await client.connect(address)
                    return try await exchange(connection, data, chunkSize: 4096) == data
                }
            }
            var ok = 0
            for try await same in group where same { ok += 1 }
            #expect(ok == 40)
        }
        await client.shutdown()
        await server.shutdown()
        #expect(server.loop.deleteStatus.withLock { $0 } == 0)
    }

    @Test func closeCancelsQueuedWrites() async throws {
        let server = MultiServer()
        let client = MultiServer()
        // The server never reads, so a big write cannot complete.
        let listener = try server.listen(["net:127.0.0.1:0"]) { _ in }
        let connection = try await client.connect(listener.address)
        let big = [UInt8](repeating: 0x5A, count: 64 * 1024 * 1024)
        let writer = Task { try await connection.write(big) }
        try await Task.sleep(for: .milliseconds(300))
        await connection.close()
        let result = await writer.result
        #expect(throws: MultiServerError.self) { try result.get() }
        if case .failure(let error) = result {
            #expect(MultiServerError.canceled ~= error, "\(error)")
        }
        await #expect { try await connection.write([1]) } throws: { MultiServerError.closed ~= $0 }
        await client.shutdown()
        await server.shutdown()
    }

    @Test func readingAfterThePeerClosed() async throws {
        let server = MultiServer()
        let client = MultiServer()
        let listener = try server.listen(["net:127.0.0.1:0~shs"]) { connection in
            Task {
                try? await connection.write(Array("bye".utf8))
                await connection.close()  // no shutdownWrite: no box-stream goodbye
            }
        }
        let connection = try await client.connect(listener.address)
        var received: [UInt8] = []
        do {
            for try await chunk in connection.bytes { received += chunk }
            Issue.record("a hang-up without goodbye ended cleanly")
        } catch MultiServerError.hangup {
        } catch {
            Issue.record("unexpected: \(error)")
        }
        #expect(received == Array("bye".utf8))
        // A second reader learns the end at once.
        var again = connection.bytes.makeAsyncIterator()
        await #expect(throws: (any Error).self) { _ = try await again.next() }
        await connection.close()
        await client.shutdown()
        await server.shutdown()
    }

    @Test func noauthIsRefusedOffDevice() async throws {
        let ms = MultiServer()
        #expect {
            _ = try ms.listen(["net:0.0.0.0:0~noauth"]) { _ in }
        } throws: { MultiServerError.noauthRefused ~= $0 }
        // Loopback TCP admits any local user: refused too without its own option.
        #expect {
            _ = try ms.listen(["net:127.0.0.1:0~noauth"]) { _ in }
        } throws: { MultiServerError.noauthRefused ~= $0 }
        // A unix socket checks the peer's uid: this user gets in.
        let path = "/tmp/ms-swift-noauth-\(UInt32.random(in: 0...UInt32.max)).sock"
        let local = try ms.listen(["unix:\(path)~noauth"], onConnection: echo)
        let connection = try await ms.connect(local.address)
        #expect(try await exchange(connection, [1, 2, 3]) == [1, 2, 3])
        await ms.shutdown()
    }

    @Test func lateAuthorizationAfterTheClientLeft() async throws {
        let hookCalled = Signal()
        let release = Signal()
        let accepted = Signal()
        let server = MultiServer(handshakeTimeout: .seconds(60), authorize: { _ in
            hookCalled.fire()
            await release.wait()
            return true  // accept a client that is already gone
        })
        let client = MultiServer()
        let listener = try server.listen(["net:127.0.0.1:0~shs"]) { connection in
            accepted.fire()
            echo(connection)
        }
        let address = listener.address
        let attempt = Task { try await client.connect(address) }
        await hookCalled.wait()
        attempt.cancel()
        _ = await attempt.result
        try await Task.sleep(for: .milliseconds(50))
        release.fire()
        try await Task.sleep(for: .milliseconds(200))
        // The server survives; whether the dead connection was handed over
        // (then failing) or dropped, it keeps serving.
        let connection = try await client.connect(address)
        #expect(try await exchange(connection, [9, 8, 7]) == [9, 8, 7])
        await client.shutdown()
        await server.shutdown()
        #expect(server.loop.deleteStatus.withLock { $0 } == 0)
    }

    @Test func listenFromInsideACallback() async throws {
        let ms = MultiServer()
        let inner = Locked<String?>(nil)
        let done = Signal()
        let outer = try ms.listen(["net:127.0.0.1:0"]) { connection in
            // On the loop thread: listen runs inline instead of waiting for itself.
            let l = try? connection.multiServer.listen(["net:127.0.0.1:0"]) { _ in }
            inner.withLock { $0 = l?.address }
            done.fire()
        }
        _ = try await ms.connect(outer.address)
        await done.wait()
        #expect(inner.withLock { $0 }?.hasPrefix("net:127.0.0.1:") == true)
        await ms.shutdown()
    }
}
