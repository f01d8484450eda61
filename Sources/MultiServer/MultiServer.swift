internal import CMultiServer

/// Serves and connects over many protocol stacks at once: `net` (TCP),
/// `unix` sockets, each optionally wrapped by transforms such as `shs`
/// (secret handshake + box-stream) or `noauth`.
///
///     let ms = MultiServer(keys: try KeyPair.generate())
///     let listener = try ms.listen(["net:127.0.0.1:0~shs"]) { connection in
///         connection.onData { result in … }
///     }
///     let connection = try await ms.connect(listener.address)
///
/// The C core runs its event loop on a thread of its own. Every call into it
/// crosses to that thread through its command queue (`ms_call`), so a
/// `MultiServer`, its listeners and connections may be used from any thread or
/// task. Callbacks (`onConnection`, `onData`, `onError`) run on the loop
/// thread: keep them short and never block in them.
///
/// Call ``shutdown()`` (or ``close()``) when done: it closes every listener,
/// connection and pending connect this multiserver opened, joins the loop
/// thread and frees the C side. Listeners and connections keep their
/// multiserver alive; when the last reference goes away, it shuts down on
/// its own (without waiting).
public final class MultiServer: Sendable {
    let loop: EventLoop
    /// The plain-HTTP handler's box (HTTP.swift), kept alive while set.
    let httpHandler = Locked<HTTPHandlerBox?>(nil)

    /// Creates a multiserver and starts its loop thread.
    ///
    /// - Parameters:
    ///   - keys: the long-term identity for `shs`; a fresh one when nil.
    ///   - appKey: the network key for `shs`.
    ///   - handshakeTimeout: limit for a whole `shs` handshake (authorize
    ///     hook included); nil means 15 s.
    ///   - connectTimeout: limit for a TCP connect; nil means 10 s.
    ///   - allowRemoteNoauth: permit `noauth` on stacks that leave this
    ///     device (anything but `unix` or a loopback `net` address).
    ///   - authorize: server side: asked, after the secret handshake verified
    ///     a client's key, whether to accept it (nil accepts everyone). The
    ///     handshake waits for the answer, within `handshakeTimeout`; `false`
    ///     hangs up without the server's last message (msg4). To attach a
    ///     value to accepted connections, use
    ///     ``init(keys:appKey:handshakeTimeout:connectTimeout:allowRemoteNoauth:authorization:)``.
    ///
    /// The corresponding C functions are `ms_new` and `ms_thread_start`.
    /// It stops the program only if those fail (out of memory, or no thread).
    public convenience init(keys: KeyPair? = nil, appKey: AppKey = .scuttlebutt,
                            handshakeTimeout: Duration? = nil, connectTimeout: Duration? = nil,
                            allowRemoteNoauth: Bool = false,
                            authorize: (@Sendable ([UInt8]) async -> Bool)? = nil) {
        self.init(orStop: keys, appKey: appKey, handshakeTimeout: handshakeTimeout,
                  connectTimeout: connectTimeout, allowRemoteNoauth: allowRemoteNoauth,
                  hook: Self.hook(accepting: authorize))
    }

    /// Creates a multiserver whose `shs` listeners ask `authorization` about
    /// each client, and attach the value it accepts with to the connection.
    ///
    /// After the secret handshake verified a client's key (32 bytes),
    /// `authorization` is called with it and the handshake waits for the
    /// answer, within `handshakeTimeout`:
    ///  - ``Authorization/refuse`` hangs up without the server's last message
    ///    (msg4): the client's connect fails;
    ///  - `Authorization.accept(value)` completes the handshake, and its value
    ///    (e.g. the peer's record or permissions) becomes the server-side
    ///    ``Connection/authorization``, held until that connection is closed.
    ///    A value accepted for a handshake that fails anyway (the client went
    ///    away, or the answer came after `handshakeTimeout`) is released at once.
    ///
    /// ```swift
    /// let ms = MultiServer(keys: keys, authorization: { remoteKey in
    ///     guard let peer = await peers.lookUp(remoteKey) else { return .refuse }
    ///     return .accept(peer)      // or: Authorization(await peers.lookUp(remoteKey))
    /// })
    /// let listener = try ms.listen(["net:0.0.0.0:8008~shs"]) { connection in
    ///     let peer = connection.authorization as? Peer
    ///     …
    /// }
    /// ```
    ///
    /// The other parameters are those of
    /// ``init(keys:appKey:handshakeTimeout:connectTimeout:allowRemoteNoauth:authorize:)``,
    /// whose `Bool` hook accepts without a value.
    /// The corresponding C functions are `ms_new`, `ms_thread_start` and
    /// `ms_authorize_done` (the value travels as its `value`, and comes back
    /// through `ms_options_t.authorize_free`). It stops the
    /// program only if `ms_new` or `ms_thread_start` fail.
    public convenience init(keys: KeyPair? = nil, appKey: AppKey = .scuttlebutt,
                            handshakeTimeout: Duration? = nil, connectTimeout: Duration? = nil,
                            allowRemoteNoauth: Bool = false,
                            authorization: @escaping @Sendable ([UInt8]) async -> Authorization) {
        self.init(orStop: keys, appKey: appKey, handshakeTimeout: handshakeTimeout,
                  connectTimeout: connectTimeout, allowRemoteNoauth: allowRemoteNoauth,
                  hook: Self.hook(attaching: authorization))
    }

    /// Like ``init(keys:appKey:handshakeTimeout:connectTimeout:allowRemoteNoauth:authorize:)``,
    /// but reports a failure to create the C multiserver or its thread as an error.
    /// The corresponding C functions are `ms_new` and `ms_thread_start`.
    public convenience init(throwing keys: KeyPair?, appKey: AppKey = .scuttlebutt,
                            handshakeTimeout: Duration? = nil, connectTimeout: Duration? = nil,
                            allowRemoteNoauth: Bool = false,
                            authorize: (@Sendable ([UInt8]) async -> Bool)? = nil) throws {
        try self.init(hooked: keys, appKey: appKey, handshakeTimeout: handshakeTimeout,
                      connectTimeout: connectTimeout, allowRemoteNoauth: allowRemoteNoauth,
                      hook: Self.hook(accepting: authorize))
    }

    /// Like ``init(keys:appKey:handshakeTimeout:connectTimeout:allowRemoteNoauth:authorization:)``,
    /// but reports a failure to create the C multiserver or its thread as an error.
    /// The corresponding C functions are `ms_new`, `ms_thread_start` and `ms_authorize_done`.
    public convenience init(throwing keys: KeyPair?, appKey: AppKey = .scuttlebutt,
                            handshakeTimeout: Duration? = nil, connectTimeout: Duration? = nil,
                            allowRemoteNoauth: Bool = false,
                            authorization: @escaping @Sendable ([UInt8]) async -> Authorization) throws {
        try self.init(hooked: keys, appKey: appKey, handshakeTimeout: handshakeTimeout,
                      connectTimeout: connectTimeout, allowRemoteNoauth: allowRemoteNoauth,
                      hook: Self.hook(attaching: authorization))
    }

    private convenience init(orStop keys: KeyPair?, appKey: AppKey, handshakeTimeout: Duration?,
                             connectTimeout: Duration?, allowRemoteNoauth: Bool, hook: AuthorizeHook?) {
        do {
            try self.init(hooked: keys, appKey: appKey, handshakeTimeout: handshakeTimeout,
                          connectTimeout: connectTimeout, allowRemoteNoauth: allowRemoteNoauth, hook: hook)
        } catch {
            fatalError("MultiServer: \(error)")
        }
    }

    private init(hooked keys: KeyPair?, appKey: AppKey, handshakeTimeout: Duration?,
                 connectTimeout: Duration?, allowRemoteNoauth: Bool, hook: AuthorizeHook?) throws(MultiServerError) {
        loop = try EventLoop(keys: keys, appKey: appKey,
                             handshakeTimeoutMs: Self.milliseconds(handshakeTimeout),
                             connectTimeoutMs: Self.milliseconds(connectTimeout),
                             allowRemoteNoauth: allowRemoteNoauth, authorize: hook)
    }

    /// The Bool form: accepts without attaching a value.
    private static func hook(accepting authorize: (@Sendable ([UInt8]) async -> Bool)?) -> AuthorizeHook? {
        guard let authorize else { return nil }
        return { key in await authorize(key) ? .accept(nil) : .refuse }
    }

    /// The value form: what the closure decided, with its value.
    private static func hook(attaching authorization: @escaping @Sendable ([UInt8]) async -> Authorization) -> AuthorizeHook {
        return { key in
            guard let value = await authorization(key).value else { return .refuse }
            return .accept(value)
        }
    }

    deinit {
        // A last resort, not a lifetime to rely on: whether it runs depends
        // on what the handlers capture. Use withMultiServer, or shutdown().
        // Never blocks: deinit may run on the loop thread, which cannot join itself.
        loop.beginShutdown {}
    }

    private static func milliseconds(_ duration: Duration?) -> UInt32 {
        guard let duration, duration > .zero else { return 0 }  // 0: the C default
        let (seconds, attoseconds) = duration.components
        let ms = seconds.multipliedReportingOverflow(by: 1000)
        guard !ms.overflow else { return UInt32.max }
        let total = ms.partialValue + attoseconds / 1_000_000_000_000_000
        return UInt32(clamping: max(total, 1))
    }

    /// The public key of this multiserver's identity (32 bytes).
    /// The corresponding C function is `ms_keys`.
    public var publicKey: [UInt8] { loop.publicKey }

    /// This multiserver's identity, `"@<base64>.ed25519"`.
    public var id: String { KeyPair.id(of: loop.publicKey) }

    /// Listens on every stack of every address (each may itself be a
    /// `;`-joined multiaddress), e.g.
    /// `["net:127.0.0.1:0~shs", "unix:/tmp/ms.sock~noauth"]`. Either all
    /// listen, or none and it throws, with the failing stack in the reason.
    ///
    /// Port 0 picks a free port; ``Listener/address`` tells which.
    ///
    /// - Parameters:
    ///   - addresses: the multiaddresses to listen on.
    ///   - onError: called (on the loop thread) for a failure that does not
    ///     stop the listener, e.g. an incoming connection whose handshake
    ///     failed.
    ///   - onConnection: called on the loop thread with each incoming
    ///     connection, after its transforms (handshakes) completed. The
    ///     handler owns the connection and must close it eventually (shutdown
    ///     closes whatever is left).
    ///   - options: per-stack options for named protocols, keyed
    ///     `"protocol.key"`: `["shs.handshake_timeout_ms": "5000",
    ///     "noauth.uids": "any"]`. A key the protocol does not know throws
    ///     ``MultiServerError/invalidArgument`` naming the known ones.
    /// The corresponding C function is `ms_listen_with`.
    public func listen(_ addresses: [String],
                       options: [String: String] = [:],
                       onError: (@Sendable (MultiServerError) -> Void)? = nil,
                       onConnection: @escaping @Sendable (Connection) -> Void) throws -> Listener {
        let address = addresses.joined(separator: ";")
        let loop = self.loop
        // Weak: the C side must not keep the multiserver alive (shutdown closes it).
        let core = ListenerCore(loop: loop, onConnection: { [weak self] stream in
            guard let self else {
                stream.closeOnLoop(nil)
                return
            }
            onConnection(Connection(owner: self, core: stream))
        }, onError: onError)
        guard let result = loop.sync({ core.listenOnLoop(address, options: options) }) else {
            throw MultiServerError(rawValue: MultiServerError.closed.rawValue,
                                   reason: "the multiserver was shut down", stage: .listen)
        }
        let advertised = try result.get()
        return Listener(owner: self, core: core, address: advertised)
    }

    /// Connects to a multiaddress, trying its `;`-alternatives in order, and
    /// returns the connection once every transform (handshake) completed.
    ///
    /// Cancelling the task cancels the connect; it then throws
    /// ``MultiServerError/canceled``.
    /// `options` are per-stack options keyed `"protocol.key"`
    /// (`["net.connect_timeout_ms": "2000"]`), as for ``listen(_:options:onError:onConnection:)``.
    /// The corresponding C functions are `ms_connect_with` and `ms_connect_cancel`.
    public func connect(_ address: String, options: [String: String] = [:]) async throws -> Connection {
        let loop = self.loop
        let request = ConnectCore(loop: loop)
        let stream: StreamCore
        do {
            stream = try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { (cont: CheckedContinuation<StreamCore, any Error>) in
                    if !loop.execute({ request.startOnLoop(address, options: options, cont) }) {
                        cont.resume(throwing: MultiServerError.closed.during(.connect))
                    }
                }
            } onCancel: {
                loop.execute { request.cancelOnLoop() }
            }
        } catch {
            throw MultiServerError.from(error, .connect)
        }
        return Connection(owner: self, core: stream)
    }

    // MARK: Scoped lifetimes

    /// Creates a multiserver, runs body with it, then shuts it down (every
    /// listener, connection and pending connect closed, the loop thread
    /// joined), whether body returned or threw. This is the lifetime to
    /// prefer: nothing depends on when the last reference goes away.
    ///
    ///     try await MultiServer.withMultiServer(keys: .generate()) { ms in … }
    ///
    /// The parameters are those of
    /// ``init(keys:appKey:handshakeTimeout:connectTimeout:allowRemoteNoauth:authorize:)``;
    /// it throws when the C multiserver cannot be created.
    public static func withMultiServer<Result>(
        keys: KeyPair? = nil, appKey: AppKey = .scuttlebutt,
        handshakeTimeout: Duration? = nil, connectTimeout: Duration? = nil,
        allowRemoteNoauth: Bool = false,
        authorize: (@Sendable ([UInt8]) async -> Bool)? = nil,
        isolation: isolated (any Actor)? = #isolation,
        _ body: (MultiServer) async throws -> Result
    ) async throws -> Result {
        let ms = try MultiServer(throwing: keys, appKey: appKey, handshakeTimeout: handshakeTimeout,
                                 connectTimeout: connectTimeout, allowRemoteNoauth: allowRemoteNoauth,
                                 authorize: authorize)
        return try await ms.executeThenShutdown(isolation: isolation, body)
    }

    /// Runs body with this multiserver, then shuts it down, whether body
    /// returned or threw.
    public func executeThenShutdown<Result>(
        isolation: isolated (any Actor)? = #isolation,
        _ body: (MultiServer) async throws -> Result
    ) async throws -> Result {
        let result: Result
        do {
            result = try await body(self)
        } catch {
            await shutdown()
            throw error
        }
        await shutdown()
        return result
    }

    /// Connects, runs body with the connection, then closes it, whether body
    /// returned or threw. Throws what ``connect(_:options:)`` throws, or
    /// what body throws.
    public func withConnection<Result>(
        to address: String, options: [String: String] = [:],
        isolation: isolated (any Actor)? = #isolation,
        _ body: (Connection) async throws -> Result
    ) async throws -> Result {
        try await connect(address, options: options).executeThenClose(isolation: isolation, body)
    }

    /// Listens, serves every incoming connection with handler, and runs body
    /// with the listener; when body returns (or throws) the listener is
    /// closed, handlers still running are cancelled, and every connection
    /// accepted here is closed before this returns.
    ///
    /// Each connection gets its own child task running handler, and is
    /// closed when handler returns or throws (an error other than
    /// ``MultiServerError/canceled`` goes to onError, with the stage
    /// ``MultiServerError/Stage/accept`` unless it has one).
    ///
    ///     try await ms.withListener(["net:127.0.0.1:0~shs"]) { conn in
    ///         for try await chunk in conn { try await conn.write(chunk) }  // echo
    ///     } body: { listener in
    ///         print(listener.address)
    ///         try await Task.sleep(for: .seconds(60))
    ///     }
    ///
    /// The parameters are those of ``listen(_:options:onError:onConnection:)``.
    public func withListener<Result>(
        _ addresses: [String], options: [String: String] = [:],
        onError: (@Sendable (MultiServerError) -> Void)? = nil,
        handler: @escaping @Sendable (Connection) async throws -> Void,
        isolation: isolated (any Actor)? = #isolation,
        body: (Listener) async throws -> Result
    ) async throws -> Result {
        let (incoming, feed) = AsyncStream<Connection>.makeStream()
        let accepted = Locked<[ObjectIdentifier: Connection]>([:])
        let listener = try listen(addresses, options: options, onError: onError) { conn in
            accepted.withLock { $0[ObjectIdentifier(conn)] = conn }
            if case .terminated = feed.yield(conn) { conn.closeSoon() }
        }
        let serving = Task {
            await withDiscardingTaskGroup { group in
                for await conn in incoming {
                    group.addTask {
                        do {
                            try await conn.executeThenClose { try await handler($0) }
                        } catch {
                            // Cancellation at the end of the scope is not news.
                            let failure = MultiServerError.from(error, .accept)
                            if failure != .canceled { onError?(failure) }
                        }
                        accepted.withLock { $0[ObjectIdentifier(conn)] = nil }
                    }
                }
            }
        }
        func finish() async {
            await listener.close()
            feed.finish()
            serving.cancel()
            await serving.value
            // Accepted but never served (the stream was cancelled first).
            let left = accepted.withLock { all in defer { all = [:] }; return Array(all.values) }
            for conn in left { await conn.close() }
        }
        let result: Result
        do {
            result = try await body(listener)
        } catch {
            await finish()
            throw error
        }
        await finish()
        return result
    }

    /// Closes every listener, connection and pending connect this multiserver
    /// opened, waits until the C core has released them, then stops and joins
    /// the loop thread and frees the C multiserver. Afterwards every operation
    /// fails with ``MultiServerError/closed``. Calling it again waits for the
    /// same shutdown.
    /// The corresponding C functions are `ms_thread_join` and `ms_delete`.
    public func shutdown() async {
        await loop.shutdown()
    }

    /// ``shutdown()`` for synchronous code: blocks until done. On the loop
    /// thread (inside a callback), where it cannot wait, it only starts the
    /// shutdown.
    /// The corresponding C functions are `ms_thread_join` and `ms_delete`.
    public func close() {
        if loop.isOnLoopThread {
            loop.beginShutdown {}
        } else {
            loop.shutdownBlocking()
        }
    }
}

extension MultiServer {
    /// An `shs` authorization hook's answer about one client (see
    /// ``MultiServer/init(keys:appKey:handshakeTimeout:connectTimeout:allowRemoteNoauth:authorization:)``):
    /// ``refuse``, or ``accept(_:)-(Sendable)`` with the value to attach to the connection.
    ///
    /// ```swift
    /// guard let peer = await peers.lookUp(remoteKey) else { return .refuse }
    /// return .accept(peer)
    /// // or, the same: return Authorization(await peers.lookUp(remoteKey))
    /// ```
    public struct Authorization: Sendable {
        /// The value accepted with; nil when refused.
        public let value: (any Sendable)?

        /// `.accept(value)` for a value, ``refuse`` for nil.
        public init(_ value: (any Sendable)?) { self.value = value }

        /// Refuse the client: the server hangs up without msg4.
        public static let refuse = Authorization(nil)

        /// Accept the client and attach `value` to its connection
        /// (``Connection/authorization``) until the connection is closed.
        public static func accept(_ value: some Sendable) -> Authorization { Authorization(value) }

        /// An optional value is almost always a look-up that may have failed:
        /// this overload only exists to flag it. It behaves as ``init(_:)``
        /// (nil refuses); say so with `Authorization(value)`, or unwrap.
        @available(*, deprecated, message: "accepting an optional: unwrap it, or write Authorization(value) to refuse on nil")
        public static func accept<Value: Sendable>(_ value: Value?) -> Authorization { Authorization(value) }
    }
}

/// A set of listening stacks sharing one connection handler.
public final class Listener: Sendable {
    let owner: MultiServer
    let core: ListenerCore

    /// The multiaddress that reaches this listener: `;`-joined, with the
    /// actual ports and each transform's advertised form, e.g.
    /// `net:127.0.0.1:41234~shs:KEY;unix:/tmp/ms.sock~noauth`.
    /// The corresponding C function is `ms_listener_address`.
    public let address: String

    init(owner: MultiServer, core: ListenerCore, address: String) {
        self.owner = owner
        self.core = core
        self.address = address
    }

    /// The multiserver this listener belongs to.
    public var multiServer: MultiServer { owner }

    /// Stops listening on every stack; returns when all are closed. Accepted
    /// connections stay open. The corresponding C function is `ms_listener_close`.
    public func close() async {
        let core = self.core
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            if !core.loop.execute({ core.closeOnLoop(done) }) { done.resume() }
        }
    }
}
