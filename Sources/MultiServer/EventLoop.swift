internal import CMultiServer
import Dispatch


#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

// The bridge between Swift's threads and the C core's loop thread.
//
// libuv is single-threaded: every handle (ms_t, streams, listeners, connect
// requests) is used on the loop thread only. ms_call() is the one thread-safe
// entry point: it queues a C function plus a pointer and wakes the loop. The
// Swift side posts closures through it (EventLoop.execute), boxed with
// Unmanaged and released inside the trampoline. Callbacks from C arrive on the
// loop thread; state they share with callers is either confined to the loop
// thread (classes marked "loop-confined" below) or guarded by a lock (`Locked`).

/// A closure queued with ms_call.
private final class LoopCall {
    let body: () -> Void
    init(_ body: @escaping () -> Void) { self.body = body }
}

/// ms_call's C function: takes back the box retained by `EventLoop.execute`
/// (so each box is released exactly once, when it has run) and runs it.
private func loopCallTrampoline(_ arg: UnsafeMutableRawPointer?) {
    guard let arg else { return }
    Unmanaged<LoopCall>.fromOpaque(arg).takeRetainedValue().body()
}

/// A value computed on the loop thread and read by a waiting thread.
///
/// `@unchecked Sendable`: `value` is written once on the loop thread before
/// `done.signal()` and read only after `done.wait()` returns, so the semaphore
/// orders the two accesses.
private final class SyncSlot<T>: @unchecked Sendable {
    var value: T?
    let done = DispatchSemaphore(value: 0)
}

/// The C multiserver and the thread that runs its loop.
///
/// `@unchecked Sendable`: the stored properties are immutable after `init`,
/// except `registry` (loop-confined, see `Registry`) and the `Locked` values. The
/// `ms` pointer is passed from other threads only to ms_call (thread-safe);
/// every other use happens on the loop thread, or in ms_thread_join and
/// ms_delete after the loop-side shutdown has closed everything.
final class EventLoop: @unchecked Sendable {
    let ms: OpaquePointer
    let registry = Registry()
    let publicKey: [UInt8]
    private let loopThread: pthread_t
    private let authorizer: Authorizer?

    private enum Phase { case running, stopped }
    private let phase = Locked<Phase>(.running)

    private enum Shutdown { case idle, inProgress([@Sendable () -> Void]), done }
    private let shutdownState = Locked<Shutdown>(.idle)
    /// Objects the C core points into until ms_delete (Swift protocols'
    /// registrations); dropped with the EventLoop.
    private let kept = Locked<[any Sendable]>([])
    func keepAlive(_ object: any Sendable) { kept.withLock { $0.append(object) } }

    /// What ms_delete returned (0 when the C core had nothing left alive).
    let deleteStatus = Locked<Int32?>(nil)

    /// Accepted authorization values the C core holds and has not given back
    /// through authorize_free yet (0 without an authorize hook).
    var outstandingAuthorizations: Int { authorizer?.outstandingValues ?? 0 }

    init(keys: KeyPair?, appKey: AppKey, handshakeTimeoutMs: UInt32, connectTimeoutMs: UInt32,
         allowRemoteNoauth: Bool,
         authorize: AuthorizeHook?) throws(MultiServerError) {
        // The hook's task is cancelled once the handshake is over: the C core
        // gives up after the handshake timeout (0: its default of 15 s).
        let limit = Duration.milliseconds(handshakeTimeoutMs == 0 ? 15_000 : Int64(handshakeTimeoutMs))
        let authorizer = authorize.map { Authorizer($0, handshakeTimeout: limit) }
        var opts = ms_options_t()
        ms_options_init(&opts)
        opts.handshake_timeout_ms = handshakeTimeoutMs
        opts.connect_timeout_ms = connectTimeoutMs
        opts.allow_remote_noauth = allowRemoteNoauth
        if let authorizer {
            opts.authorize = authorizeHook
            // Gives every accepted value (an `AuthorizationBox`) back once the
            // C core is done with it.
            opts.authorize_free = authorizeFreeHook
            // Unretained: the EventLoop keeps the Authorizer alive until after
            // ms_delete, after which neither hook can fire.
            opts.authorize_arg = Unmanaged.passUnretained(authorizer).toOpaque()
        }
        var created: OpaquePointer?
        // ms_new copies the keys and the app key.
        let rc: Int32 = appKey.bytes.withUnsafeBufferPointer { app in
            opts.app_key = app.baseAddress
            if let keys {
                return keys.withCKeyPair { kp in
                    opts.keys = kp
                    return ms_new(&created, &opts)
                }
            }
            return ms_new(&created, &opts)
        }
        guard rc == 0, let ms = created else {
            throw MultiServerError(rawValue: rc, reason: "ms_new", operation: .create)
        }
        publicKey = Array(UnsafeBufferPointer(start: UnsafeRawPointer(ms_keys(ms))
                                                .assumingMemoryBound(to: UInt8.self),
                                              count: Int(MS_PUBLICKEYBYTES)))
        let started = ms_thread_start(ms)
        guard started == 0 else {
            _ = ms_delete(ms)
            throw MultiServerError(rawValue: started, reason: "ms_thread_start", operation: .create)
        }
        // Learn the loop thread's identity, so that synchronous calls made on
        // it can run inline instead of waiting for themselves.
        let slot = SyncSlot<pthread_t>()
        let arg = Unmanaged.passRetained(LoopCall { slot.value = pthread_self(); slot.done.signal() })
        let posted = ms_call(ms, loopCallTrampoline, arg.toOpaque())
        precondition(posted == 0, "ms_call failed: \(posted)")
        slot.done.wait()
        self.ms = ms
        self.loopThread = slot.value!
        self.authorizer = authorizer
        authorizer?.attach(self)
    }

    /// True on the loop thread.
    var isOnLoopThread: Bool { pthread_equal(pthread_self(), loopThread) != 0 }

    /// Runs body on the loop thread soon (on the next loop iteration, also
    /// when called from the loop thread). Returns false, without running
    /// body, once the loop has been shut down.
    @discardableResult
    func execute(_ body: @escaping @Sendable () -> Void) -> Bool {
        phase.withLock { phase in
            guard phase == .running else { return false }
            let arg = Unmanaged.passRetained(LoopCall(body)).toOpaque()
            guard ms_call(ms, loopCallTrampoline, arg) == 0 else {
                Unmanaged<LoopCall>.fromOpaque(arg).release()
                return false
            }
            return true
        }
    }

    /// Runs body on the loop thread and waits for its result: inline when
    /// already on the loop thread, else by blocking until it has run. Nil once
    /// the loop has been shut down.
    func sync<T: Sendable>(_ body: @escaping @Sendable () -> T) -> T? {
        if isOnLoopThread { return body() }
        let slot = SyncSlot<T>()
        guard execute({ slot.value = body(); slot.done.signal() }) else { return nil }
        slot.done.wait()
        return slot.value
    }

    // MARK: Shutdown

    /// Closes everything (listeners, pending connects, streams, pending
    /// authorizations), waits for their close callbacks, stops and joins the
    /// loop thread and frees the C multiserver. Safe to call more than once
    /// and from several tasks: every caller returns once it is done.
    func shutdown() async {
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            beginShutdown { done.resume() }
        }
    }

    /// `shutdown()` for synchronous callers. Must not be called on the loop thread.
    func shutdownBlocking() {
        precondition(!isOnLoopThread, "the loop thread cannot wait for itself to stop")
        let finished = DispatchSemaphore(value: 0)
        beginShutdown { finished.signal() }
        finished.wait()
    }

    /// Starts shutting down (once) and calls whenDone when finished; never blocks.
    func beginShutdown(whenDone: @escaping @Sendable () -> Void) {
        enum Role { case leader, follower, finished }
        let role: Role = shutdownState.withLock { state in
            switch state {
            case .idle:
                state = .inProgress([whenDone])
                return .leader
            case .inProgress(var waiters):
                waiters.append(whenDone)
                state = .inProgress(waiters)
                return .follower
            case .done:
                return .finished
            }
        }
        switch role {
        case .finished: whenDone()
        case .follower: break
        case .leader:
            let registry = self.registry
            let posted = execute {
                registry.closeAll {
                    // Runs on the loop thread, which cannot join itself.
                    DispatchQueue.global().async { self.finishShutdown() }
                }
            }
            if !posted { DispatchQueue.global().async { self.finishShutdown() } }
        }
    }

    private func finishShutdown() {
        phase.withLock { $0 = .stopped }
        let joined = ms_thread_join(ms)
        assert(joined == 0, "ms_thread_join: \(joined)")
        let rc = ms_delete(ms)
        deleteStatus.withLock { $0 = rc }
        if rc != 0 {
            // The C core still holds something alive: freeing it would be a
            // use-after-free, so it is leaked instead.
            assertionFailure("ms_delete: \(MultiServerError(rawValue: rc))")
        }
        // When ms_delete succeeded, every accepted value has come back through
        // authorize_free (on the loop, or in ms_delete's final drain).
        authorizer?.detach()
        let waiters: [@Sendable () -> Void] = shutdownState.withLock { state in
            guard case .inProgress(let waiters) = state else { return [] }
            state = .done
            return waiters
        }
        for waiter in waiters { waiter() }
    }
}

/// Everything open on the loop, so that shutdown can close it.
///
/// `@unchecked Sendable`, loop-confined: every property is read and written
/// only on the loop thread (inside closures run by `EventLoop.execute` or
/// inside C callbacks), so the loop thread serialises all accesses.
final class Registry: @unchecked Sendable {
    /// False once shutdown began: new listens, connects and authorizations are refused.
    private(set) var accepting = true
    var streams: [ObjectIdentifier: StreamCore] = [:]
    var listeners: [ObjectIdentifier: ListenerCore] = [:]
    var connects: [ObjectIdentifier: ConnectCore] = [:]
    var authorizations: [ObjectIdentifier: AuthorizeRequest] = [:]
    private var drained: (() -> Void)?

    func add(_ s: StreamCore) { streams[ObjectIdentifier(s)] = s }
    func add(_ l: ListenerCore) { listeners[ObjectIdentifier(l)] = l }
    func add(_ c: ConnectCore) { connects[ObjectIdentifier(c)] = c }

    func remove(_ s: StreamCore) { streams[ObjectIdentifier(s)] = nil; checkDrained() }
    func remove(_ l: ListenerCore) { listeners[ObjectIdentifier(l)] = nil; checkDrained() }
    func remove(_ c: ConnectCore) { connects[ObjectIdentifier(c)] = nil; checkDrained() }

    /// Closes or cancels everything, then calls then() (on the loop thread)
    /// once every close/connect callback has fired.
    func closeAll(then: @escaping () -> Void) {
        accepting = false
        drained = then
        for request in authorizations.values { request.answerOnLoop(.refuse) }
        authorizations.removeAll()
        for listener in Array(listeners.values) { listener.closeOnLoop(nil) }
        for connect in Array(connects.values) { connect.cancelOnLoop() }
        for stream in Array(streams.values) { stream.closeOnLoop(nil) }
        checkDrained()
    }

    private func checkDrained() {
        guard !accepting, streams.isEmpty, listeners.isEmpty, connects.isEmpty,
              let drained else { return }
        self.drained = nil
        drained()
    }
}

// MARK: - authorize hook

/// What an authorize hook decided about one client.
enum AuthorizeDecision: Sendable {
    /// Hang up without msg4.
    case refuse
    /// Send msg4; a value is attached to the connection (`Connection.authorization`).
    case accept((any Sendable)?)
}

/// The form of the public authorize closures the EventLoop runs.
typealias AuthorizeHook = @Sendable ([UInt8]) async -> AuthorizeDecision

// MARK: authorization values
//
// A value accepted by the authorize hook travels through the C core as an
// `AuthorizationBox` retained once (ms_authorize_done's `void *value`, read
// back with ms_stream_auth). That reference belongs to the C core, which gives
// it back exactly once through ms_options_t.authorize_free (`authorizeFreeHook`,
// which releases it): after the close callback of the stream carrying it, or
// as soon as the C core drops it (the handshake failed or was canceled after
// the hook accepted, or the hook answered after the handshake timed out).
//
// A stream handed over to Swift reads the box in `StreamCore.init` and keeps
// its own strong reference until its close callback, which runs before the C
// core lets go of its own. So each retain is balanced by exactly one release
// and Swift never looks at a box the C core has freed.

/// A value accepted by the authorize hook, as handed to the C core.
final class AuthorizationBox: Sendable {
    let value: any Sendable
    init(_ value: any Sendable) { self.value = value }
}

/// The Swift authorize closure behind ms_options_t.authorize.
///
/// `@unchecked Sendable`: `decide` is immutable and Sendable; `loop` and
/// `boxesHeldByCore` are guarded by their locks.
final class Authorizer: @unchecked Sendable {
    let decide: AuthorizeHook
    /// After this the handshake has ended (timed out) whatever the hook does.
    let handshakeTimeout: Duration
    private let loop = Locked<EventLoop?>(nil)
    /// Boxes handed to the C core and not yet given back through authorize_free.
    private let boxesHeldByCore = Locked(0)

    init(_ decide: @escaping AuthorizeHook, handshakeTimeout: Duration) {
        self.decide = decide
        self.handshakeTimeout = handshakeTimeout
    }

    func attach(_ loop: EventLoop) { self.loop.withLock { $0 = loop } }
    /// Breaks the EventLoop ↔ Authorizer cycle after ms_delete.
    func detach() { loop.withLock { $0 = nil } }

    /// Accepted values the C core still holds (0 once every one came back).
    var outstandingValues: Int { boxesHeldByCore.withLock { $0 } }

    /// Boxes value, retained once, for ms_authorize_done; the reference
    /// comes back through `authorizeFreeHook`.
    func box(_ value: any Sendable) -> UnsafeMutableRawPointer {
        boxesHeldByCore.withLock { $0 += 1 }
        return Unmanaged.passRetained(AuthorizationBox(value)).toOpaque()
    }

    /// authorize_free: the C core is done with a box from `box(_:)`.
    fileprivate func free(_ pointer: UnsafeMutableRawPointer) {
        // Released before counting it back, so that a count of 0 means the
        // value has gone too (unless someone else still holds it).
        _ = Unmanaged<AuthorizationBox>.fromOpaque(pointer).takeRetainedValue()
        boxesHeldByCore.withLock { $0 -= 1 }
    }

    /// On the loop thread, from the C hook.
    func request(remoteKey: [UInt8], req: OpaquePointer) {
        guard let loop = loop.withLock({ $0 }), loop.registry.accepting else {
            ms_authorize_done(req, false, nil)
            return
        }
        let request = AuthorizeRequest(req, authorizer: self)
        let id = ObjectIdentifier(request)
        loop.registry.authorizations[id] = request
        let decide = self.decide
        let timeout = handshakeTimeout
        // The hook runs in a task that is cancelled when its handshake is
        // over: at shutdown (Registry.closeAll) or once the handshake timed
        // out (the multiserver's handshakeTimeout; a longer per-stack
        // shs.handshake_timeout_ms is not known here). The answer is still
        // whatever the hook returns; a hook that checks for cancellation
        // just returns sooner.
        request.task = Task {
            let deciding = Task { await decide(remoteKey) }
            let timer = Task {
                try await Task.sleep(for: timeout)
                deciding.cancel()
            }
            let decision = await withTaskCancellationHandler {
                await deciding.value
            } onCancel: {
                deciding.cancel()
            }
            timer.cancel()
            // Answer on the loop, unless shutdown already answered (rejected) it.
            // If the loop is gone, the decision (and its value) is simply dropped.
            loop.execute {
                guard let pending = loop.registry.authorizations.removeValue(forKey: id) else { return }
                pending.answerOnLoop(decision)
            }
        }
    }
}

/// One pending ms_authorize_t, answered exactly once.
///
/// `@unchecked Sendable`, loop-confined: `req` and `task` are used only on the
/// loop thread (`task` is set in `Authorizer.request`, on the loop)
/// (the object itself only travels through Sendable closures as an identity).
final class AuthorizeRequest: @unchecked Sendable {
    private var req: OpaquePointer?
    private let authorizer: Authorizer
    /// The task running the hook, cancelled when the request is answered
    /// by someone else (shutdown).
    var task: Task<Void, Never>?

    init(_ req: OpaquePointer, authorizer: Authorizer) {
        self.req = req
        self.authorizer = authorizer
    }

    func answerOnLoop(_ decision: AuthorizeDecision) {
        task?.cancel()
        task = nil
        guard let req else { return }
        self.req = nil
        switch decision {
        case .refuse:
            ms_authorize_done(req, false, nil)
        case .accept(nil):
            ms_authorize_done(req, true, nil)
        case .accept(let value?):
            // The C core owns the box from here: it hands the stream over (and
            // StreamCore takes its own reference) inside this call, or, when
            // the handshake is already gone, frees the box inside it.
            ms_authorize_done(req, true, authorizer.box(value))
        }
    }
}

/// ms_authorize_fn: called on the loop thread after the client's key was verified.
private func authorizeHook(_ remoteKey: UnsafePointer<UInt8>?, _ req: OpaquePointer?,
                           _ arg: UnsafeMutableRawPointer?) {
    guard let req else { return }
    guard let arg, let remoteKey else {
        ms_authorize_done(req, false, nil)
        return
    }
    let authorizer = Unmanaged<Authorizer>.fromOpaque(arg).takeUnretainedValue()
    let key = Array(UnsafeBufferPointer(start: remoteKey, count: Int(MS_PUBLICKEYBYTES)))
    authorizer.request(remoteKey: key, req: req)
}

/// ms_options_t.authorize_free: called exactly once per accepted value, on the
/// loop (or in ms_delete's final drain, after the loop thread was joined).
private func authorizeFreeHook(_ value: UnsafeMutableRawPointer?, _ arg: UnsafeMutableRawPointer?) {
    guard let value else { return }
    guard let arg else {
        _ = Unmanaged<AuthorizationBox>.fromOpaque(value).takeRetainedValue()
        return
    }
    Unmanaged<Authorizer>.fromOpaque(arg).takeUnretainedValue().free(value)
}
