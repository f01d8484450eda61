internal import CMultiServer

/// One established duplex byte stream (after its handshakes), incoming or
/// outgoing.
///
/// A connection is an `AsyncSequence` of the chunks it receives, with one
/// inbound buffer for its whole life: a loop that stops early and a later
/// loop share it, so the later one continues where the first stopped. Only
/// one task may iterate at a time (a second, concurrent one gets
/// ``MultiServerError/busy``). Reading stops while the consumer lags. Write
/// with ``write(_:)-([UInt8])``, which waits while the connection is above its
/// high-water mark.
///
///     try await connection.executeThenClose { connection in
///         for try await chunk in connection { try await connection.write(chunk) }
///     }
///
/// Prefer the scoped forms (``executeThenClose(isolation:_:)``,
/// ``MultiServer/withConnection(to:options:isolation:_:)``,
/// ``MultiServer/withListener(_:options:onError:handler:isolation:body:)``), which close
/// the connection when their closure returns; otherwise call ``close()``.
/// ``MultiServer/shutdown()`` closes whatever is left.
public final class Connection: Sendable {
    let owner: MultiServer
    let core: StreamCore
    /// The one inbound buffer (see the type's documentation).
    let inbound: ChunkQueue

    init(owner: MultiServer, core: StreamCore) {
        self.owner = owner
        self.core = core
        self.inbound = ChunkQueue(core: core)
    }

    /// Ids for writes and shutdowns, so that a cancellation finds its request.
    private static let requestIDs = Locked<UInt64>(0)
    private static func nextRequestID() -> UInt64 { requestIDs.withLock { $0 += 1; return $0 } }

    /// The multiserver this connection belongs to.
    public var multiServer: MultiServer { owner }

    /// The full address of the stack, e.g. `net:127.0.0.1:52311~shs:KEY`.
    /// The corresponding C function is `ms_stream_address`.
    public var address: String { core.address }

    /// The remote long-term public key (32 bytes), or nil when the stack does
    /// not authenticate. The corresponding C function is `ms_stream_remote_key`.
    public var remoteKey: [UInt8]? { core.remoteKey }

    /// The remote identity, `"@<base64>.ed25519"`, when known.
    public var remoteID: String? { core.remoteKey.map(KeyPair.id(of:)) }

    /// What the server's authorize hook attached when it accepted this
    /// connection: the value of the `Authorization.accept(value)` that the
    /// `authorization:` closure of
    /// ``MultiServer/init(keys:appKey:handshakeTimeout:connectTimeout:allowRemoteNoauth:authorization:)``
    /// answered.
    ///
    /// Nil on outgoing (client-side) connections, on stacks without `shs`,
    /// when the multiserver has no hook or a `Bool` one
    /// (``MultiServer/init(keys:appKey:handshakeTimeout:connectTimeout:allowRemoteNoauth:authorize:)``),
    /// and once the connection is closed: the multiserver holds the value
    /// from the handshake until the connection is closed (by ``close()`` or
    /// ``MultiServer/shutdown()``), then releases it. Cast it back to its type:
    ///
    ///     if let peer = connection.authorization as? Peer { … }
    ///
    /// The corresponding C function is `ms_stream_auth`.
    public var authorization: (any Sendable)? { core.authorization }

    /// True for connections accepted by a listener.
    /// The corresponding C function is `ms_stream_is_server`.
    public var isServer: Bool { core.isServer }

    /// The peer's identity as the stack established it, in whatever scheme:
    /// `kind` is `"ed25519"` for shs and noise (then ``remoteKey`` holds the
    /// same bytes), or another scheme a protocol uses (a certificate
    /// fingerprint, a unix uid). `nil` when unauthenticated.
    public struct RemoteIdentity: Sendable, Hashable {
        public let kind: String
        public let bytes: [UInt8]
    }
    /// The corresponding C function is `ms_stream_remote_id`.
    public var remoteIdentity: RemoteIdentity? { core.remoteIdentity }

    /// Key/value metadata any layer of the stack set, as of the handover:
    /// `"host"`/`"port"` as the dialed address wrote them, `"unix.peer_uid"`,
    /// and a protocol's own `"<protocol>.<name>"` entries.
    /// The corresponding C functions are `ms_stream_meta_count` and `ms_stream_meta_at`.
    public var metadata: [String: [UInt8]] { core.metadata }
    /// One metadata value as UTF-8 text, or nil.
    public func metadata(_ key: String) -> String? {
        core.metadata[key].map { String(decoding: $0, as: UTF8.self) }
    }

    /// For incoming connections, the listening stack they came in on, as
    /// advertised (`net:127.0.0.1:8008~shs:KEY`); nil for outgoing ones.
    /// The corresponding C function is `ms_stream_stack`.
    public var stack: String? { core.stack }

    /// Writes bytes and returns once the C core has completed the write.
    ///
    /// While the connection is at or above its high-water mark (1 MiB by
    /// default: `ms_stream_writable`), the write waits, without copying the
    /// bytes, until the C stream drains (`ms_stream_on_drain`); writes from
    /// several tasks go out whole and in the order they arrived.
    ///
    /// Throws ``MultiServerError/closed`` once the connection is closed,
    /// ``MultiServerError/canceled`` for a write still queued when it closed
    /// or when the task is cancelled (a write still waiting is withdrawn and
    /// nothing of it is sent; one the C core already has cannot be, so the
    /// connection is closed), ``MultiServerError/writeShutDown`` after
    /// ``shutdownWrite()``, or the stream's error.
    /// The corresponding C functions are `ms_stream_write`, `ms_stream_writable`
    /// and `ms_stream_on_drain`.
    public func write(_ bytes: [UInt8]) async throws {
        guard !bytes.isEmpty else { return }
        let core = self.core
        let id = Self.nextRequestID()
        try await Self.outbound(core, id: id, stage: .write) { done in
            core.writeOnLoop(id: id, bytes, done)
        }
    }

    /// Writes the bytes of a sequence (`conn.write("hello".utf8)`).
    public func write(_ bytes: some Sequence<UInt8>) async throws {
        try await write(Array(bytes))
    }

    /// Runs a write or a shutdown on the loop, withdrawing it when the task is cancelled.
    private static func outbound(_ core: StreamCore, id: UInt64, stage: MultiServerError.Stage,
                                 _ start: @escaping @Sendable (CheckedContinuation<Void, any Error>) -> Void)
        async throws(MultiServerError) {
        do {
            try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { (done: CheckedContinuation<Void, any Error>) in
                    if Task.isCancelled {
                        done.resume(throwing: MultiServerError.canceled.during(stage))
                    } else if !core.loop.execute({ start(done) }) {
                        done.resume(throwing: MultiServerError.closed.during(stage))
                    }
                }
            } onCancel: {
                core.loop.execute { core.cancelOnLoop(id: id) }
            }
        } catch {
            throw MultiServerError.from(error, stage)
        }
    }

    /// Reads with a closure, called on the loop thread with each chunk
    /// (`.success(bytes)`), then once with `.success(nil)` at the clean end
    /// (the remote finished writing) or `.failure` on an error, after which
    /// nothing more arrives. Reading starts now. Replaces an earlier reader.
    /// The corresponding C function is `ms_stream_read_start`.
    public func onData(_ handler: @escaping @Sendable (Result<[UInt8]?, MultiServerError>) -> Void) {
        let core = self.core
        if !core.loop.execute({ core.setReaderOnLoop(.handler(handler)) }) {
            handler(.failure(MultiServerError.closed.during(.read)))
        }
    }

    /// The connection itself, for code written against earlier versions:
    /// iterating it is iterating the connection (the same inbound buffer).
    public var bytes: Connection { self }

    /// Ends the write side once every earlier write has completed
    /// (transforms send their end marker, e.g. the box-stream goodbye). The
    /// read side stays open. Cancellation behaves as for ``write(_:)-([UInt8])``.
    /// The corresponding C function is `ms_stream_shutdown`.
    public func shutdownWrite() async throws {
        let core = self.core
        let id = Self.nextRequestID()
        try await Self.outbound(core, id: id, stage: .shutdown) { done in
            core.shutdownOnLoop(id: id, done)
        }
    }

    /// Closes the connection now (writes still queued fail with
    /// ``MultiServerError/canceled``) and returns once the C core has released
    /// it, or at once when the task is cancelled (the close goes on). Calling
    /// it again is harmless. The corresponding C function is `ms_stream_close`.
    public func close() async {
        let core = self.core
        let finished = OnceSignal()
        await withTaskCancellationHandler {
            await finished.wait {
                if !core.loop.execute({ core.closeOnLoop { finished.fire() } }) { finished.fire() }
            }
        } onCancel: {
            finished.fire()
        }
    }

    /// Starts closing without waiting (from synchronous code).
    func closeSoon() {
        let core = self.core
        core.loop.execute { core.closeOnLoop(nil) }
    }

    /// Runs body with this connection, then closes it, whether body returned
    /// or threw (in the manner of swift-nio's `NIOAsyncChannel.executeThenClose`).
    public func executeThenClose<Result>(
        isolation: isolated (any Actor)? = #isolation,
        _ body: (Connection) async throws -> Result
    ) async throws -> Result {
        let result: Result
        do {
            result = try await body(self)
        } catch {
            await close()
            throw error
        }
        await close()
        return result
    }
}

extension Connection: AsyncSequence {
    public typealias Element = [UInt8]
    /// Untyped, as every throwing API of this module (see ``MultiServerError``);
    /// what it throws is always a `MultiServerError`.
    public typealias Failure = any Error

    /// Iterates the connection's one inbound buffer.
    public struct AsyncIterator: AsyncIteratorProtocol {
        let inbound: ChunkQueue

        public mutating func next() async throws -> [UInt8]? {
            try await inbound.next()
        }

        public mutating func next(isolation actor: isolated (any Actor)?) async throws -> [UInt8]? {
            try await inbound.next()
        }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(inbound: inbound) }
}

/// A wake-up that happens once, whichever comes first: the awaited event or
/// a cancellation.
final class OnceSignal: Sendable {
    private let state = Locked<(fired: Bool, waiter: CheckedContinuation<Void, Never>?)>((false, nil))

    func fire() {
        let waiter: CheckedContinuation<Void, Never>? = state.withLock { s in
            s.fired = true
            defer { s.waiter = nil }
            return s.waiter
        }
        waiter?.resume()
    }

    /// Calls start, then waits until fire() (which start may have called already).
    func wait(start: () -> Void) async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s in
                if s.fired { return true }
                s.waiter = c
                return false
            }
            if now { c.resume() } else { start() }
        }
    }
}
