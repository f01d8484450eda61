import Testing
@testable import MultiServer

/// A toy in-memory transport written in Swift: `memswift:NAME`. Listeners
/// sit in a registry keyed by name; a dial makes two in-memory streams, one
/// for each end, whose writes land in the other's reads.
///
/// Listening and dialing must happen in the one multiserver the transport is
/// registered with (both ends of a pair live on its loop thread).
struct MemTransport: StreamTransport {
    let name = "memswift"
    let registry = Registry()

    /// `@unchecked Sendable`: its only state is `listeners`, which is read
    /// and written only by the transport's hooks, all on the loop thread of
    /// the one multiserver the transport is registered with (never from two
    /// threads).
    final class Registry: @unchecked Sendable {
        var listeners: [String: TransportListener] = [:]
    }

    final class Listening: TransportListening {
        let registry: Registry
        let key: String
        init(registry: Registry, key: String) { self.registry = registry; self.key = key }
        func close() { registry.listeners[key] = nil }
    }

    /// One end of a pair: what its stream's writes go to.
    final class End: TransportStreamHandler {
        weak var peer: TransportStream?
        func write(_ bytes: [UInt8]) throws {
            guard let peer, !peer.isClosed else { throw MultiServerError.brokenPipe }
            peer.receive(bytes)
        }
        func shutdownWrite() { peer?.receiveEnd() }
        func close() {
            peer?.receiveError(MultiServerError.connectionReset)
            peer = nil
        }
    }

    func listen(fields: [String], listener: TransportListener) throws -> any TransportListening {
        guard fields.count == 1, !fields[0].isEmpty else {
            throw MultiServerError(rawValue: MultiServerError.invalidArgument.rawValue, reason: "want memswift:NAME")
        }
        let key = fields[0]
        guard registry.listeners[key] == nil else {
            throw MultiServerError(rawValue: MultiServerError.alreadyExists.rawValue, reason: "\"\(key)\" is taken")
        }
        registry.listeners[key] = listener
        return Listening(registry: registry, key: key)
    }

    func dial(fields: [String], context: TransportContext) throws -> TransportStream {
        let key = fields.first ?? ""
        guard let listener = registry.listeners[key], !listener.isClosed else {
            throw MultiServerError(rawValue: MultiServerError.connectionRefused.rawValue,
                                   reason: "nobody listens on memswift:\(key)")
        }
        let clientEnd = End(), serverEnd = End()
        let client = try TransportStream(context: context, address: "memswift:\(key)", handler: clientEnd)
        let server: TransportStream
        do {
            server = try TransportStream(context: listener.context, address: "memswift:\(key)", handler: serverEnd)
        } catch {
            client.discard()
            throw error
        }
        clientEnd.peer = server
        serverEnd.peer = client
        do {
            try listener.accept(server)
        } catch {
            client.discard()
            throw error
        }
        return client
    }
}

@Suite(.timeLimit(.minutes(1)))
struct SwiftTransportTests {
    /// memswift:a~shs: a Swift transport under the built-in shs.
    @Test func swiftTransportUnderSHS() async throws {
        let ms = MultiServer()
        try ms.register(transport: MemTransport())
        let listener = try ms.listen(["memswift:a~shs"], onConnection: echo)
        #expect(listener.address.hasPrefix("memswift:a~shs:"))
        let conn = try await ms.connect(listener.address)
        #expect(conn.remoteKey == ms.publicKey)
        #expect(conn.address.hasPrefix("memswift:a~shs"))
        let data = testBytes(100_000, seed: 7)
        #expect(try await exchange(conn, data) == data)

        // A second connection after the first has gone.
        let again = try await ms.connect(listener.address)
        let small = testBytes(1000, seed: 8)
        #expect(try await exchange(again, small) == small)

        // The name is taken now.
        #expect { try ms.register(transport: MemTransport()) } throws: { MultiServerError.alreadyExists ~= $0 }
        await ms.shutdown()
        #expect(ms.loop.deleteStatus.withLock { $0 } == 0)
    }

    /// Dialing a name nobody listens on fails with the transport's reason.
    @Test func dialingNobodyFails() async throws {
        let ms = MultiServer()
        try ms.register(transport: MemTransport())
        let listener = try ms.listen(["memswift:here~shs"], onConnection: echo)
        let shs = listener.address.split(separator: "~")[1]
        do {
            _ = try await ms.connect("memswift:nobody~\(shs)")
            Issue.record("connected to nobody")
        } catch let error as MultiServerError {
            #expect(error == .connectionRefused)
            #expect(error.reason?.contains("nobody listens on memswift:nobody") == true, "\(error)")
        }
        await ms.shutdown()
        #expect(ms.loop.deleteStatus.withLock { $0 } == 0)
    }
}
