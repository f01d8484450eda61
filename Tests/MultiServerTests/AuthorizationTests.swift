import Testing
@testable import MultiServer

/// What an authorization closure attaches in these tests.
struct Peer: Sendable, Equatable {
    let key: [UInt8]
    let name: String
}

/// An attached value that reports its release.
final class Token: Sendable {
    let released: Signal
    init(_ released: Signal) { self.released = released }
    deinit { released.fire() }
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
        #expect(server.loop.registry.unclaimedAuthorizationCount == 0)
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
        #expect(server.loop.registry.unclaimedAuthorizationCount == 0)
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
        let server = MultiServer(authorization: { _ in
            let signal = Signal()
            released.append(signal)
            return .accept(Token(signal))
        })
        let client = MultiServer()
        let serverSide = Collected<Connection>()
        let listener = try server.listen(["net:127.0.0.1:0~shs"]) { serverSide.append($0) }

        // Closed by the server's handler: released then, although the
        // Connection object is still referenced.
        let first = try await client.connect(listener.address)
        #expect(await eventually { serverSide.all.count == 1 })
        let accepted = serverSide.all[0]
        #expect(accepted.authorization is Token)
        #expect(released.all.count == 1)
        #expect(!released.all[0].fired)
        await accepted.close()
        #expect(await eventually { released.all[0].fired })
        #expect(accepted.authorization == nil)
        await first.close()

        // Left open: shutdown closes the connection and releases its value.
        let second = try await client.connect(listener.address)
        #expect(await eventually { serverSide.all.count == 2 })
        #expect(serverSide.all[1].authorization is Token)
        #expect(!released.all[1].fired)
        await client.shutdown()
        await server.shutdown()
        #expect(released.all[1].fired)
        #expect(serverSide.all[1].authorization == nil)
        #expect(second.authorization == nil)
        #expect(server.loop.registry.unclaimedAuthorizationCount == 0)
        #expect(server.loop.deleteStatus.withLock { $0 } == 0)
    }

    /// The hook accepts after the handshake timed out: the C core drops the
    /// value without telling, and the multiserver releases it at shutdown.
    @Test func valueDroppedByTheHandshakeIsReleasedAtShutdown() async throws {
        let hookCalled = Signal()
        let answer = Signal()
        let released = Signal()
        let server = MultiServer(handshakeTimeout: .milliseconds(300), authorization: { _ in
            hookCalled.fire()
            await answer.wait()
            return .accept(Token(released))
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
        answer.fire()
        // Wait until the loop has passed the late answer to ms_authorize_done.
        let registry = server.loop.registry
        #expect(await eventually { await onLoop(server) { registry.authorizations.isEmpty } ?? true })
        // The C core dropped the value without a word (ms_authorize_done after
        // the handshake failed): it waits, unclaimed, for shutdown.
        #expect(await onLoop(server) { registry.unclaimedAuthorizationCount } == 1)
        #expect(!released.fired)
        await client.shutdown()
        await server.shutdown()
        #expect(released.fired)
        #expect(registry.unclaimedAuthorizationCount == 0)
        #expect(server.loop.deleteStatus.withLock { $0 } == 0)
    }

    /// Refused (listener closing) and pending hand-overs during shutdown do
    /// not leak either.
    @Test func shutdownWhileTheHookIsStillThinking() async throws {
        let hookCalled = Signal()
        let answer = Signal()
        let released = Signal()
        let server = MultiServer(handshakeTimeout: .seconds(60), authorization: { _ in
            hookCalled.fire()
            await answer.wait()
            return .accept(Token(released))
        })
        let client = MultiServer(handshakeTimeout: .seconds(60))
        let listener = try server.listen(["net:127.0.0.1:0~shs"]) { _ in }
        let address = listener.address
        let attempt = Task { try await client.connect(address) }
        await hookCalled.wait()
        await server.shutdown()   // refuses the pending authorization
        answer.fire()             // the hook's late value goes nowhere
        #expect(await eventually { released.fired })
        _ = await attempt.result
        await client.shutdown()
        #expect(server.loop.deleteStatus.withLock { $0 } == 0)
    }
}
