import Testing
@testable import MultiServer

/// Issue 10, Swift part: one test per defect, each failing before its fix.
@Suite(.timeLimit(.minutes(2)))
struct Issue10Tests {
    /// A `for … { break }` and a second loop: the second continues where the
    /// first stopped, nothing is dropped.
    @Test func readingTwiceLosesNothing() async throws {
        let server = MultiServer()
        let client = MultiServer()
        let listener = try server.listen(["net:127.0.0.1:0~shs"]) { conn in
            Task {
                try await conn.write(Array("first".utf8))
                try await Task.sleep(for: .milliseconds(100))
                try await conn.write(Array("second".utf8))
                try await conn.shutdownWrite()
            }
        }
        let conn = try await client.connect(listener.address)
        var first: [UInt8] = []
        for try await chunk in conn.bytes { first = chunk; break }
        try await Task.sleep(for: .milliseconds(400))  // "second" arrives meanwhile
        var rest: [UInt8] = []
        for try await chunk in conn.bytes { rest += chunk }
        #expect(String(decoding: first, as: UTF8.self) == "first")
        #expect(String(decoding: rest, as: UTF8.self) == "second")
        await client.shutdown()
        await server.shutdown()
    }

    /// 200 concurrent 1 MiB writes to a peer that never reads: the C write
    /// queue stays near its high-water mark instead of taking all 200 MiB.
    @Test func writesWaitForTheHighWaterMark() async throws {
        let server = MultiServer()
        let client = MultiServer()
        let listener = try server.listen(["net:127.0.0.1:0~shs"]) { _ in }  // never reads
        let conn = try await client.connect(listener.address)
        let chunk = [UInt8](repeating: 0x42, count: 1 << 20)
        let writers = Task {
            await withTaskGroup(of: Void.self) { group in
                for _ in 0..<200 { group.addTask { try? await conn.write(chunk) } }
            }
        }
        try await Task.sleep(for: .milliseconds(1500))
        let queued = conn.core.loop.sync { conn.core.writeQueueSizeOnLoop() } ?? 0
        #expect(queued <= 4 << 20, "C write queue holds \(queued >> 20) MiB")
        await conn.close()
        await writers.value
        await client.shutdown()
        await server.shutdown()
    }

    /// Equality is by code, as the pattern match is.
    @Test func equalityIsByCode() {
        let e = MultiServerError(rawValue: MultiServerError.handshakeFailed.rawValue,
                                 reason: "shs: msg3 (client auth)", operation: .connect)
        #expect(e == .handshakeFailed)
        #expect(MultiServerError.handshakeFailed ~= e)
        #expect(Set([e, .handshakeFailed]).count == 1)
        #expect(e != .timedOut)
    }

    /// A cancelled read throws the same error as a cancelled connect.
    @Test func cancelledReadThrowsCanceled() async throws {
        let server = MultiServer()
        let client = MultiServer()
        let listener = try server.listen(["net:127.0.0.1:0"]) { _ in }  // never writes
        let conn = try await client.connect(listener.address)
        let reader = Task { for try await _ in conn.bytes {} }
        try await Task.sleep(for: .milliseconds(200))
        reader.cancel()
        let result = await reader.result
        if case .failure(let error) = result {
            #expect(MultiServerError.canceled ~= error, "\(error)")
        } else {
            Issue.record("a cancelled read ended cleanly")
        }
        await client.shutdown()
        await server.shutdown()
    }

    /// A write blocked by a peer that does not read returns soon after its
    /// task is cancelled.
    @Test func cancelledWriteReturns() async throws {
        let server = MultiServer()
        let client = MultiServer()
        let listener = try server.listen(["net:127.0.0.1:0"]) { _ in }
        let conn = try await client.connect(listener.address)
        let big = [UInt8](repeating: 1, count: 64 << 20)
        let writer = Task { try await conn.write(big) }
        try await Task.sleep(for: .milliseconds(300))
        let start = ContinuousClock.now
        writer.cancel()
        let result = await writer.result
        #expect(ContinuousClock.now - start < .seconds(1))
        if case .failure(let error) = result {
            #expect(MultiServerError.canceled ~= error, "\(error)")
        } else {
            Issue.record("the write completed")
        }
        await client.shutdown()
        await server.shutdown()
    }

    /// The authorize hook's task is cancelled once its handshake is over
    /// (here: timed out).
    @Test func authorizeTaskIsCancelledWhenTheHandshakeEnds() async throws {
        let sawCancel = Signal()
        let server = MultiServer(handshakeTimeout: .milliseconds(300), authorize: { _ in
            while !Task.isCancelled { try? await Task.sleep(for: .milliseconds(20)) }
            sawCancel.fire()
            return true
        })
        let client = MultiServer()
        let listener = try server.listen(["net:127.0.0.1:0~shs"]) { _ in }
        _ = try? await client.connect(listener.address)
        let watchdog = Task { try await Task.sleep(for: .seconds(3)); sawCancel.fire() }
        let start = ContinuousClock.now
        await sawCancel.wait()
        watchdog.cancel()
        #expect(ContinuousClock.now - start < .seconds(2))
        await client.shutdown()
        await server.shutdown()
    }

    /// The secret key is not a plain array anyone can reflect on.
    @Test func secretKeyIsNotAnArray() throws {
        let kp = try KeyPair.generate()
        let arrays = Mirror(reflecting: kp).children.filter { ($0.value as? [UInt8])?.count == 64 }
        #expect(arrays.isEmpty)
    }
}
