internal import CMultiServer

/// One established duplex byte stream (after its handshakes), incoming or
/// outgoing.
///
/// Read either with ``onData(_:)`` (closure per chunk) or with ``bytes`` (an
/// async sequence of chunks), not both at once. Write with ``write(_:)``.
/// Close it when done; ``MultiServer/shutdown()`` closes whatever is left.
public final class Connection: Sendable {
    let owner: MultiServer
    let core: StreamCore

    init(owner: MultiServer, core: StreamCore) {
        self.owner = owner
        self.core = core
    }

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

    /// Writes bytes (copied) and returns once the C core has completed the
    /// write, which gives natural backpressure. Throws when the stream failed,
    /// was closed (``MultiServerError/closed``; ``MultiServerError/canceled``
    /// for a write still queued when it closed) or its write side was shut
    /// down. The corresponding C function is `ms_stream_write`.
    public func write(_ bytes: [UInt8]) async throws {
        guard !bytes.isEmpty else { return }
        let core = self.core
        try await withCheckedThrowingContinuation { (done: CheckedContinuation<Void, any Error>) in
            if !core.loop.execute({ core.writeOnLoop(bytes, done) }) {
                done.resume(throwing: MultiServerError.closed.during(.write))
            }
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

    /// The incoming bytes as an async sequence of chunks. Reading starts with
    /// the first iteration; the sequence ends at the clean end (the remote
    /// finished writing) and throws on an error. At most about 1 MiB is
    /// buffered: reading pauses (`ms_stream_read_stop`) while the consumer
    /// lags and resumes when it catches up. Use one sequence at a time.
    /// The corresponding C functions are `ms_stream_read_start` and `ms_stream_read_stop`.
    public var bytes: AsyncThrowingStream<[UInt8], any Error> {
        let queue = ChunkQueue(core: core)
        return AsyncThrowingStream(unfolding: { try await queue.next() })
    }

    /// Ends the write side once every earlier write has completed
    /// (transforms send their end marker, e.g. the box-stream goodbye). The
    /// read side stays open. The corresponding C function is `ms_stream_shutdown`.
    public func shutdownWrite() async throws {
        let core = self.core
        try await withCheckedThrowingContinuation { (done: CheckedContinuation<Void, any Error>) in
            if !core.loop.execute({ core.shutdownOnLoop(done) }) {
                done.resume(throwing: MultiServerError.closed.during(.shutdown))
            }
        }
    }

    /// Closes the connection now (writes still queued fail with
    /// ``MultiServerError/canceled``) and returns once the C core has released
    /// it. Calling it again is harmless. The corresponding C function is
    /// `ms_stream_close`.
    public func close() async {
        let core = self.core
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            if !core.loop.execute({ core.closeOnLoop(done) }) { done.resume() }
        }
    }
}
