internal import CMultiServer

/// The Swift side of one ms_listener_t.
///
/// `@unchecked Sendable`: `loop` and the two closures are immutable (and the
/// closures Sendable); everything else is loop-confined, read and written only
/// on the loop thread.
final class ListenerCore: @unchecked Sendable {
    let loop: EventLoop
    private let onConnection: @Sendable (StreamCore) -> Void
    private let onError: (@Sendable (MultiServerError) -> Void)?
    private var listener: OpaquePointer?
    private var closing = false
    private var closed = false
    private var closeWaiters: [CheckedContinuation<Void, Never>] = []

    /// On the loop thread: what a peer in `scope` can dial (ms_listener_addresses).
    func addressesOnLoop(_ scope: Int32) -> [String] {
        guard let listener, !closing else { return [] }
        guard let joined = ms_listener_addresses(listener, scope) else { return [] }
        defer { ms_free(joined) }
        let text = String(cString: joined)
        return text.isEmpty ? [] : text.split(separator: ";").map(String.init)
    }

    init(loop: EventLoop, onConnection: @escaping @Sendable (StreamCore) -> Void,
         onError: (@Sendable (MultiServerError) -> Void)?) {
        self.loop = loop
        self.onConnection = onConnection
        self.onError = onError
    }

    /// On the loop thread: ms_listen. Returns the advertised address.
    func listenOnLoop(_ address: String, options: [String: String] = [:]) -> Result<String, MultiServerError> {
        guard loop.registry.accepting else {
            return .failure(MultiServerError(rawValue: MultiServerError.closed.rawValue,
                                             reason: "the multiserver is shutting down", stage: .listen))
        }
        let popts: OpaquePointer?
        switch makeStackOptions(options) {
        case .success(let made): popts = made
        case .failure(let error): return .failure(error.during(.listen))
        }
        defer { ms_popts_free(popts) }
        // Retained for the C listener; released in the close callback, or
        // right here when ms_listen fails (its callbacks then never fire).
        let arg = Unmanaged.passRetained(self).toOpaque()
        var reason = [CChar](repeating: 0, count: 512)
        var created: OpaquePointer?
        let rc = ms_listen_with(loop.ms, address, popts, listenerConnectionCallback, arg, &created,
                                &reason, reason.count)
        guard rc == 0, let created else {
            Unmanaged<ListenerCore>.fromOpaque(arg).release()
            return .failure(MultiServerError(rc, reason: reason, operation: .listen))
        }
        listener = created
        ms_listener_on_error(created, listenerErrorCallback, arg)
        loop.registry.add(self)
        return .success(String(cString: ms_listener_address(created)))
    }

    fileprivate func incomingOnLoop(_ stream: OpaquePointer) {
        guard !closing, loop.registry.accepting else {
            // Through a StreamCore, so that shutdown waits for its close
            // callback (the C core then frees the authorization value it may
            // carry, through authorize_free).
            StreamCore(loop: loop, stream: stream).closeOnLoop(nil)
            return
        }
        onConnection(StreamCore(loop: loop, stream: stream))
    }

    fileprivate func errorOnLoop(stack: String?, status: Int32, reason: String?) {
        var text = reason ?? ""
        if let stack { text = text.isEmpty ? stack : "\(stack): \(text)" }
        onError?(MultiServerError(rawValue: status, reason: text.isEmpty ? nil : text, operation: .accept))
    }

    func closeOnLoop(_ waiter: CheckedContinuation<Void, Never>?) {
        if closed || listener == nil {
            waiter?.resume()
            return
        }
        if let waiter { closeWaiters.append(waiter) }
        guard !closing, let listener else { return }
        closing = true
        ms_listener_close(listener, listenerCloseCallback, Unmanaged.passUnretained(self).toOpaque())
    }

    fileprivate func didCloseOnLoop() {
        closed = true
        listener = nil
        let waiters = closeWaiters
        closeWaiters = []
        for waiter in waiters { waiter.resume() }
        loop.registry.remove(self)
    }
}

private func listenerConnectionCallback(_ s: OpaquePointer?, _ arg: UnsafeMutableRawPointer?) {
    guard let s else { return }
    guard let arg else {
        ms_stream_close(s, nil, nil)
        return
    }
    Unmanaged<ListenerCore>.fromOpaque(arg).takeUnretainedValue().incomingOnLoop(s)
}

private func listenerErrorCallback(_ stack: UnsafePointer<CChar>?, _ status: Int32,
                                   _ reason: UnsafePointer<CChar>?, _ arg: UnsafeMutableRawPointer?) {
    guard let arg else { return }
    Unmanaged<ListenerCore>.fromOpaque(arg).takeUnretainedValue()
        .errorOnLoop(stack: stack.map { String(cString: $0) }, status: status,
                     reason: reason.map { String(cString: $0) })
}

private func listenerCloseCallback(_ l: OpaquePointer?, _ arg: UnsafeMutableRawPointer?) {
    guard let arg else { return }
    // The last callback for this listener: release the reference taken by listenOnLoop.
    let core = Unmanaged<ListenerCore>.fromOpaque(arg).takeUnretainedValue()
    core.didCloseOnLoop()
    Unmanaged<ListenerCore>.fromOpaque(arg).release()
}

/// One ms_connect in flight.
///
/// `@unchecked Sendable`, loop-confined: every property is read and written
/// only on the loop thread (the cancellation handler posts to the loop too).
final class ConnectCore: @unchecked Sendable {
    let loop: EventLoop
    private var req: OpaquePointer?
    private var continuation: CheckedContinuation<StreamCore, any Error>?
    private var cancelRequested = false
    private var finished = false

    init(loop: EventLoop) { self.loop = loop }

    func startOnLoop(_ address: String, options: [String: String] = [:],
                     _ continuation: CheckedContinuation<StreamCore, any Error>) {
        guard loop.registry.accepting else {
            continuation.resume(throwing: MultiServerError.closed.during(.connect))
            return
        }
        if cancelRequested {
            continuation.resume(throwing: MultiServerError(rawValue: MultiServerError.canceled.rawValue,
                                                           reason: "canceled before it started",
                                                           operation: .connect))
            return
        }
        let popts: OpaquePointer?
        switch makeStackOptions(options) {
        case .success(let made): popts = made
        case .failure(let error):
            continuation.resume(throwing: error.during(.connect))
            return
        }
        defer { ms_popts_free(popts) }
        self.continuation = continuation
        // Retained for the C request; released in the connect callback, or
        // right here when ms_connect fails (the callback then never fires).
        let arg = Unmanaged.passRetained(self).toOpaque()
        var created: OpaquePointer?
        let rc = ms_connect_with(loop.ms, address, popts, connectCallback, arg, &created)
        guard rc == 0 else {
            Unmanaged<ConnectCore>.fromOpaque(arg).release()
            self.continuation = nil
            continuation.resume(throwing: MultiServerError(rawValue: rc, operation: .connect))
            return
        }
        req = created
        loop.registry.add(self)
    }

    func cancelOnLoop() {
        guard !finished else { return }
        cancelRequested = true
        if let req { ms_connect_cancel(req) }
    }

    fileprivate func didFinishOnLoop(_ stream: OpaquePointer?, status: Int32, reason: String?) {
        finished = true
        req = nil
        let continuation = self.continuation
        self.continuation = nil
        if status == 0, let stream {
            let core = StreamCore(loop: loop, stream: stream)
            if loop.registry.accepting {
                continuation?.resume(returning: core)
            } else {
                core.closeOnLoop(nil)
                continuation?.resume(throwing: MultiServerError.closed.during(.connect))
            }
        } else {
            continuation?.resume(throwing: MultiServerError(rawValue: status == 0 ? MS_EINVAL.rawValue : status,
                                                            reason: reason, operation: .connect))
        }
        loop.registry.remove(self)
    }
}

private func connectCallback(_ s: OpaquePointer?, _ status: Int32, _ reason: UnsafePointer<CChar>?,
                             _ arg: UnsafeMutableRawPointer?) {
    guard let arg else {
        if let s { ms_stream_close(s, nil, nil) }
        return
    }
    // The only callback of a connect: release the reference taken by startOnLoop.
    Unmanaged<ConnectCore>.fromOpaque(arg).takeRetainedValue()
        .didFinishOnLoop(s, status: status, reason: reason.map { String(cString: $0) })
}

/// Per-stack options ("protocol.key" → value) as a C ms_popts_t (nil when
/// empty); the caller frees it with ms_popts_free after the call that copies
/// it. On the loop thread or any thread: it touches no handle.
func makeStackOptions(_ options: [String: String]) -> Result<OpaquePointer?, MultiServerError> {
    if options.isEmpty { return .success(nil) }
    var made: OpaquePointer?
    let rc = ms_popts_new(&made)
    guard rc == 0, let made else { return .failure(MultiServerError(rawValue: rc)) }
    for (key, value) in options.sorted(by: { $0.key < $1.key }) {
        let rc = ms_popts_parse(made, "\(key)=\(value)")
        if rc != 0 {
            ms_popts_free(made)
            return .failure(MultiServerError(rawValue: rc,
                                             reason: "option \"\(key)\": expected \"protocol.key\" (e.g. \"shs.handshake_timeout_ms\")"))
        }
    }
    return .success(made)
}
