import Testing
@testable import MultiServer

/// What an authorization closure attaches in these tests.
struct Peer: Sendable, Equatable {
    let key: [UInt8]
    let name: String
}

/// Counts how many times something happened (here: deinits).
final class Counter: Sendable {
    private let count = Locked(0)
    func increment() { count.withLock { $0 += 1 } }
    var value: Int { count.withLock { $0 } }
}

/// An attached value that reports its release: fires its signal and counts
/// its deinit, which must happen exactly once.
final class Token: Sendable {
    let released: Signal
    let deinits: Counter
    init(_ released: Signal, deinits: Counter = Counter()) {
        self.released = released
        self.deinits = deinits
    }
    deinit {
        deinits.increment()
        released.fire()
    }
}

/// Runs body on the multiserver's loop thread (nil once it is shut down).
func onLoop<T: Sendable>(_ ms: MultiServer, _ body: @escaping @Sendable () -> T) async -> T? {
    await withCheckedContinuation { (done: CheckedContinuation<T?, Never>) in
        if !ms.loop.execute({ done.resume(returning: body()) }) { done.resume(returning: nil) }
    }
}

/// Polls condition until it holds or the timeout passes; returns whether it held.
func eventually(within timeout: Duration = .seconds(10),
                _ condition: () async -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if await condition() { return true }
        try? await Task.sleep(for: .milliseconds(5))
    }
    return await condition()
}

@Suite(.timeLimit(.minutes(2)))
struct AuthorizationTests {

    @Test func acceptedValueIsAttachedToTheServerConnection() async throws {
        let asked = Collected<[UInt8]>()
        let server = MultiServer(authorization: { key in
            asked.append(key)
            try? await Task.sleep(for: .milliseconds(10))  // answers later, as hooks may
            return .accept(Peer(key: key, name: "friend"))
        })
        let client = MultiServer()
        let seen = Collected<(stack: String?, peer: Peer?, isNil: Bool)>()
        let listener = try server.listen(["net:127.0.0.1:0~shs", "net:127.0.0.1:0"]) { connection in
            seen.append((connection.stack, connection.authorization as? Peer,
                         connection.authorization == nil))
            echo(connection)
        }
        let alts = alternatives(listener.address)

        let connection = try await client.connect(alts[0])
        #expect(connection.authorization == nil, "client side")
        #expect(try await exchange(connection, [1, 2, 3]) == [1, 2, 3])
        // No shs, no hook, no value.
        let plain = try await client.connect(alts[1])
        #expect(try await exchange(plain, [4]) == [4])

        #expect(asked.all == [client.publicKey])
        let all = seen.all
        #expect(all.count == 2)
        #expect(all.contains { $0.stack == alts[0] && $0.peer == Peer(key: client.publicKey, name: "friend") })
        #expect(all.contains { $0.stack == alts[1] && $0.isNil })
        await client.shutdown()
        await server.shutdown()
        #expect(server.loop.deleteStatus.withLock { $0 } == 0)
        #expect(server.loop.outstandingAuthorizations == 0)
    }

    @Test func refuseHangsUpOnTheClient() async throws {
        let friend = MultiServer()
        let stranger = MultiServer()
        let friendKey = friend.publicKey
        let serverErrors = Collected<MultiServerError>()
        let accepted = Collected<String>()
        let server = MultiServer(authorization: { key in
            guard key == friendKey else { return .refuse }
            return .accept("welcome")
        })
        let listener = try server.listen(["net:127.0.0.1:0~shs"], onError: { serverErrors.append($0) }) { connection in
            accepted.append(connection.authorization as? String ?? "<none>")
            echo(connection)
        }
        do {
            _ = try await stranger.connect(listener.address)
            Issue.record("connected although refused")
        } catch let error as MultiServerError {
            // The client only sees the server hang up after msg3.
            #expect(error.matches(.handshakeFailed), "\(error)")
            #expect(error.reason?.contains("not authorized") == true, "\(error)")
        }
        #expect(serverErrors.all.contains { $0.matches(.unauthorized) }, "\(serverErrors.all)")

        let connection = try await friend.connect(listener.address)
        #expect(try await exchange(connection, [7]) == [7])
        #expect(accepted.all == ["welcome"])
        await friend.shutdown()
        await stranger.shutdown()
        await server.shutdown()
        #expect(server.loop.outstandingAuthorizations == 0)
    }

    @Test func boolFormStillAcceptsAndRefusesWithoutAValue() async throws {
        let client = MultiServer()
        let clientKey = client.publicKey
        let values = Collected<Bool>()
        let server = MultiServer(authorize: { key in key == clientKey })
        let listener = try server.listen(["net:127.0.0.1:0~shs"]) { connection in
            values.append(connection.authorization == nil)
            echo(connection)
        }
        let connection = try await client.connect(listener.address)
        #expect(try await exchange(connection, [5, 6]) == [5, 6])
        #expect(values.all == [true])
        let other = MultiServer()
        await #expect { _ = try await other.connect(listener.address) } throws: {
            MultiServerError.handshakeFailed ~= $0
        }
        await other.shutdown()
        await client.shutdown()
        await server.shutdown()
    }

    /// Every pre-existing way to call the initializers still compiles and
    /// picks the Bool form (this is a compile-time check as much as a test).
    @Test func boolFormCallsStayUnambiguous() throws {
        let keys = try KeyPair.generate()
        let servers: [MultiServer] = [
            MultiServer(),
            MultiServer(keys: keys),
            MultiServer(authorize: nil),
            MultiServer(authorize: { _ in true }),
            MultiServer { _ in true },
            MultiServer(keys: keys) { key in
                let allowed = key.count == 32
                return allowed
            },
            try MultiServer(throwing: nil),
            try MultiServer(throwing: keys, authorize: { _ in false }),
            // The value forms.
            MultiServer(authorization: { _ in .refuse }),
            MultiServer(keys: keys, handshakeTimeout: .seconds(5), authorization: { key in .accept(key.count) }),
            MultiServer { key in
                let name: String? = key.first == 0 ? nil : "someone"
                return MultiServer.Authorization(name)
            },
            try MultiServer(throwing: nil, authorization: { _ in .accept("ok") }),
        ]
        for server in servers { server.close() }
    }

    @Test func authorizationValues() {
        #expect(MultiServer.Authorization.refuse.value == nil)
        #expect(MultiServer.Authorization.accept(3).value as? Int == 3)
        #expect(MultiServer.Authorization(String?.none).value == nil)
        #expect(MultiServer.Authorization(String?.some("x")).value as? String == "x")
    }

    @Test func valueIsReleasedWhenTheConnectionCloses() async throws {
        let released = Collected<Signal>()
        let deinits = Collected<Counter>()
        let server = MultiServer(authorization: { _ in
            let signal = Signal()
            let counter = Counter()
            released.append(signal)
            deinits.append(counter)
            return .accept(Token(signal, deinits: counter))
        })
        let client = MultiServer()
        let serverSide = Collected<Connection>()
        let listener = try server.listen(["net:127.0.0.1:0~shs"]) { serverSide.append($0) }

        // Closed by the server's handler: released then, although the
        // Connection object is still referenced. close() returns after the C
        // core gave the value back through authorize_free.
        let first = try await client.connect(listener.address)
        #expect(await eventually { serverSide.all.count == 1 })
        let accepted = serverSide.all[0]
        #expect(accepted.authorization is Token)
        #expect(released.all.count == 1)
        #expect(!released.all[0].fired)
        #expect(server.loop.outstandingAuthorizations == 1)
        await accepted.close()
        #expect(released.all[0].fired)
        #expect(deinits.all[0].value == 1)
        #expect(server.loop.outstandingAuthorizations == 0)
        #expect(accepted.authorization == nil)
        await accepted.close()   // again: nothing more to release
        #expect(deinits.all[0].value == 1)
        await first.close()

        // Left open: shutdown closes the connection and releases its value.
        let second = try await client.connect(listener.address)
        #expect(await eventually { serverSide.all.count == 2 })
        #expect(serverSide.all[1].authorization is Token)
        #expect(!released.all[1].fired)
        await client.shutdown()
        await server.shutdown()
        #expect(released.all[1].fired)
        #expect(deinits.all.map(\.value) == [1, 1])
        #expect(serverSide.all[1].authorization == nil)
        #expect(second.authorization == nil)
        #expect(server.loop.outstandingAuthorizations == 0)
        #expect(server.loop.deleteStatus.withLock { $0 } == 0)
    }

    /// A copy of the value taken from `Connection.authorization` stays valid
    /// after the C core freed its box: each reference is balanced once, and
    /// the value goes exactly once, when the last copy does.
    @Test func valueReadFromTheConnectionOutlivesTheBoxAndGoesOnce() async throws {
        let deinits = Counter()
        let released = Signal()
        let server = MultiServer(authorization: { _ in
            .accept(Token(released, deinits: deinits))
        })
        let client = MultiServer()
        let serverSide = Collected<Connection>()
        let listener = try server.listen(["net:127.0.0.1:0~shs"]) { serverSide.append($0) }
        let outgoing = try await client.connect(listener.address)
        #expect(await eventually { serverSide.all.count == 1 })
        let accepted = serverSide.all[0]

        var copy = accepted.authorization as? Token
        #expect(copy != nil)
        await accepted.close()
        // Our box and the C core's reference are gone, the value is not.
        #expect(server.loop.outstandingAuthorizations == 0)
        #expect(accepted.authorization == nil)
        #expect(deinits.value == 0)
        #expect(copy?.deinits === deinits)
        copy = nil
        #expect(deinits.value == 1)

        await outgoing.close()
        await client.shutdown()
        await server.shutdown()
        // Never a second release, not even at shutdown.
        #expect(deinits.value == 1)
        #expect(released.fired)
        #expect(server.loop.deleteStatus.withLock { $0 } == 0)
    }

    /// Many connections, closed from either side or left to shutdown: every
    /// value is released exactly once.
    @Test func everyValueIsReleasedExactlyOnce() async throws {
        let counters = Collected<Counter>()
        let server = MultiServer(authorization: { _ in
            let counter = Counter()
            counters.append(counter)
            return .accept(Token(Signal(), deinits: counter))
        })
        let client = MultiServer()
        let serverSide = Collected<Connection>()
        let listener = try server.listen(["net:127.0.0.1:0~shs"]) { serverSide.append($0) }
        var outgoing: [Connection] = []
        for _ in 0..<6 { outgoing.append(try await client.connect(listener.address)) }
        #expect(await eventually { serverSide.all.count == 6 })
        #expect(server.loop.outstandingAuthorizations == 6)
        // Two closed by the server, two by the client, two left to shutdown.
        await serverSide.all[0].close()
        await serverSide.all[1].close()
        await outgoing[2].close()
        await outgoing[3].close()
        #expect(counters.all.filter { $0.value == 1 }.count == 2)
        // The client closing does not close the server's side by itself (its
        // handler does not read), so the values stay until that side closes.
        try await Task.sleep(for: .milliseconds(50))
        #expect(server.loop.outstandingAuthorizations == 4)
        await serverSide.all[2].close()
        await serverSide.all[3].close()
        #expect(counters.all.map(\.value).sorted() == [0, 0, 1, 1, 1, 1])
        #expect(server.loop.outstandingAuthorizations == 2)
        await client.shutdown()
        await server.shutdown()
        #expect(counters.all.map(\.value) == Array(repeating: 1, count: 6))
        #expect(server.loop.outstandingAuthorizations == 0)
        // Nothing releases a value a second time afterwards either.
        try await Task.sleep(for: .milliseconds(50))
        #expect(counters.all.allSatisfy { $0.value == 1 })
        #expect(server.loop.deleteStatus.withLock { $0 } == 0)
    }

    /// The hook accepts after the handshake timed out: the C core drops the
    /// value inside ms_authorize_done and gives it back through
    /// authorize_free, so it goes at once, long before shutdown.
    @Test func valueDroppedByATimedOutHandshakeIsReleasedPromptly() async throws {
        let hookCalled = Signal()
        let answer = Signal()
        let released = Signal()
        let deinits = Counter()
        let server = MultiServer(handshakeTimeout: .milliseconds(300), authorization: { _ in
            hookCalled.fire()
            await answer.wait()
            return .accept(Token(released, deinits: deinits))
        })
        let client = MultiServer(handshakeTimeout: .seconds(30))
        let listener = try server.listen(["net:127.0.0.1:0~shs"]) { connection in
            Issue.record("a timed-out handshake was handed over")
            Task { await connection.close() }
        }
        let address = listener.address
        let attempt = Task { try await client.connect(address) }
        await hookCalled.wait()
        let result = await attempt.result
        #expect(throws: MultiServerError.self) { _ = try result.get() }
        #expect(!released.fired)
        answer.fire()
        // Released while the server is still running, not at shutdown.
        #expect(await eventually { released.fired })
        let registry = server.loop.registry
        #expect(await onLoop(server) { registry.authorizations.isEmpty } == true)
        #expect(server.loop.outstandingAuthorizations == 0)
        #expect(deinits.value == 1)
        await client.shutdown()
        await server.shutdown()
        #expect(deinits.value == 1)
        #expect(server.loop.outstandingAuthorizations == 0)
        #expect(server.loop.deleteStatus.withLock { $0 } == 0)
    }

    /// The client goes away while the hook is thinking; the hook accepts
    /// afterwards. Whatever becomes of the server side of the handshake (it
    /// fails, or hands over a connection whose read then ends), the value is
    /// released once, without waiting for shutdown.
    @Test func valueIsReleasedWhenTheClientGoesAwayDuringAuthorization() async throws {
        let hookCalled = Signal()
        let answer = Signal()
        let released = Signal()
        let deinits = Counter()
        let server = MultiServer(handshakeTimeout: .seconds(60), authorization: { _ in
            hookCalled.fire()
            await answer.wait()
            return .accept(Token(released, deinits: deinits))
        })
        let client = MultiServer(handshakeTimeout: .seconds(60))
        let listener = try server.listen(["net:127.0.0.1:0~shs"]) { connection in
            echo(connection)  // reads until the (gone) client's end, then closes
        }
        let address = listener.address
        let attempt = Task { try await client.connect(address) }
        await hookCalled.wait()
        await client.shutdown()   // cancels the connect: the client hangs up
        let result = await attempt.result
        #expect(throws: (any Error).self) { _ = try result.get() }
        answer.fire()
        #expect(await eventually { released.fired })
        #expect(await eventually { server.loop.outstandingAuthorizations == 0 })
        #expect(deinits.value == 1)
        await server.shutdown()
        #expect(deinits.value == 1)
        #expect(server.loop.outstandingAuthorizations == 0)
        #expect(server.loop.deleteStatus.withLock { $0 } == 0)
    }

    /// Refused (listener closing) and pending hand-overs during shutdown do
    /// not leak either.
    @Test func shutdownWhileTheHookIsStillThinking() async throws {
        let hookCalled = Signal()
        let answer = Signal()
        let released = Signal()
        let deinits = Counter()
        let server = MultiServer(handshakeTimeout: .seconds(60), authorization: { _ in
            hookCalled.fire()
            await answer.wait()
            return .accept(Token(released, deinits: deinits))
        })
        let client = MultiServer(handshakeTimeout: .seconds(60))
        let listener = try server.listen(["net:127.0.0.1:0~shs"]) { _ in }
        let address = listener.address
        let attempt = Task { try await client.connect(address) }
        await hookCalled.wait()
        await server.shutdown()   // refuses the pending authorization
        answer.fire()             // the hook's late value goes nowhere
        #expect(await eventually { released.fired })
        #expect(deinits.value == 1)
        _ = await attempt.result
        await client.shutdown()
        #expect(server.loop.outstandingAuthorizations == 0)
        #expect(server.loop.deleteStatus.withLock { $0 } == 0)
    }
}
