internal import CMultiServer


/// Who receives a stream's incoming bytes.
enum StreamReader {
    case none
    case handler(@Sendable (Result<[UInt8]?, MultiServerError>) -> Void)
    case queue(ChunkQueue)
}

/// The Swift side of one ms_stream_t.
///
/// `@unchecked Sendable`: the metadata (`address`, `stack`, `remoteKey`,
/// `isServer`) and `loop` are immutable; `authorizationBox` is guarded by its
/// lock; everything else is loop-confined,
/// read and written only on the loop thread (in closures run by
/// `EventLoop.execute` and in the C callbacks below). `stream` is valid until
/// the close callback and only dereferenced on the loop thread.
final class StreamCore: @unchecked Sendable {
    let loop: EventLoop
    let address: String
    let stack: String?
    let remoteKey: [UInt8]?
    let isServer: Bool
    let metadata: [String: [UInt8]]
    let remoteIdentity: Connection.RemoteIdentity?
    /// The authorize hook's accepted value (see `Authorizer.box(_:)`): our own
    /// strong reference to the box behind ms_stream_auth, taken at hand-over
    /// and dropped in the close callback. The C core's reference is separate;
    /// it gives that one back through authorize_free after the close callback.
    private let authorizationBox: Locked<AuthorizationBox?>

    private let stream: OpaquePointer
    private var closing = false
    private var closed = false
    private var closeWaiters: [@Sendable () -> Void] = []
    private var reader = StreamReader.none
    private var reading = false
    /// Set once the read side ended: nil (clean end) or the error.
    private var readEnd: Result<Void, MultiServerError>?

    /// Writes (and a shutdown) waiting for the C stream to fall below its
    /// high-water mark, in order; see `writeOnLoop`.
    private var pending: [PendingOutbound] = []
    /// Ids of writes and shutdowns handed to the C core and not completed.
    private var inFlight: Set<UInt64> = []
    /// Set once a shutdown went to the C core (ms_stream_writable is false from then on).
    private var shutdownSubmitted = false
    /// The C queue is below its high-water mark (ms_stream_writable without
    /// the shutdown condition).
    private var belowHighWaterOnLoop: Bool {
        ms_stream_write_queue_size(stream) < ms_stream_high_water(stream)
    }
    /// Ids cancelled before their request reached the loop.
    private var canceledEarly: Set<UInt64> = []

    /// On the loop thread: takes over a stream handed over by the C core.
    /// The stream's data pointer holds one retained reference to this object,
    /// released by the close callback (after which the C core never calls back).
    init(loop: EventLoop, stream: OpaquePointer) {
        self.loop = loop
        self.stream = stream
        address = String(cString: ms_stream_address(stream))
        stack = ms_stream_stack(stream).map { String(cString: $0) }
        remoteKey = ms_stream_remote_key(stream).map {
            Array(UnsafeBufferPointer(start: $0, count: Int(MS_PUBLICKEYBYTES)))
        }
        isServer = ms_stream_is_server(stream)
        var meta: [String: [UInt8]] = [:]
        for i in 0..<ms_stream_meta_count(stream) {
            var value: UnsafeRawPointer?
            var len = 0
            guard let key = ms_stream_meta_at(stream, i, &value, &len) else { break }
            meta[String(cString: key)] = value.map { Array(UnsafeRawBufferPointer(start: $0, count: len)) } ?? []
        }
        metadata = meta
        var kind: UnsafePointer<CChar>?
        var idLen = 0
        if let id = ms_stream_remote_id(stream, &kind, &idLen), let kind {
            remoteIdentity = Connection.RemoteIdentity(
                kind: String(cString: kind), bytes: Array(UnsafeRawBufferPointer(start: id, count: idLen)))
        } else {
            remoteIdentity = nil
        }
        // The stream is open, so the C core still holds the box: retaining
        // it here (takeUnretainedValue gives a strong reference) keeps it
        // valid for us whenever the C core lets go of its own reference.
        authorizationBox = Locked(ms_stream_auth(stream).map {
            Unmanaged<AuthorizationBox>.fromOpaque($0).takeUnretainedValue()
        })
        ms_stream_set_data(stream, Unmanaged.passRetained(self).toOpaque())
        ms_stream_on_drain(stream, streamDrainCallback, ms_stream_data(stream))
        loop.registry.add(self)
    }

    private var context: UnsafeMutableRawPointer { ms_stream_data(stream)! }

    /// The value the authorize hook attached, until the stream is closed.
    var authorization: (any Sendable)? { authorizationBox.withLock { $0?.value } }

    // MARK: reads (loop thread)

    func setReaderOnLoop(_ newReader: StreamReader) {
        if closed || closing {
            deliverEnd(to: newReader, .failure(.closed.during(.read)))
            return
        }
        if let readEnd {
            deliverEnd(to: newReader, readEnd)
            return
        }
        if case .queue(let old) = reader, case .queue(let new) = newReader, old === new {
            startReadingOnLoop()
            return
        }
        if case .queue(let old) = reader { old.finish(.failure(.canceled.during(.read))) }
        reader = newReader
        startReadingOnLoop()
    }

    /// Resumes reading for `queue` if it is still the reader.
    func resumeReadingOnLoop(for queue: ChunkQueue) {
        guard case .queue(let current) = reader, current === queue else { return }
        startReadingOnLoop()
    }

    private func startReadingOnLoop() {
        guard !reading, !closing, readEnd == nil else { return }
        let rc = ms_stream_read_start(stream, streamReadCallback, context)
        if rc == 0 {
            reading = true
        } else {
            endReadsOnLoop(.failure(MultiServerError(rawValue: rc, operation: .read)))
        }
    }

    private func stopReadingOnLoop() {
        guard reading else { return }
        reading = false
        _ = ms_stream_read_stop(stream)
    }

    fileprivate func didReadOnLoop(status: Int32, data: UnsafePointer<UInt8>?, count: Int) {
        if status == 0 {
            guard count > 0, let data else { return }
            let chunk = Array(UnsafeBufferPointer(start: data, count: count))
            switch reader {
            case .none: break
            case .handler(let handler): handler(.success(chunk))
            case .queue(let queue):
                if queue.push(chunk) { stopReadingOnLoop() }
            }
        } else if status == MS_EOF.rawValue {
            reading = false
            endReadsOnLoop(.success(()))
        } else {
            reading = false
            endReadsOnLoop(.failure(MultiServerError(rawValue: status, operation: .read)))
        }
    }

    private func endReadsOnLoop(_ end: Result<Void, MultiServerError>) {
        guard readEnd == nil else { return }
        readEnd = end
        deliverEnd(to: reader, end)
    }

    private func deliverEnd(to reader: StreamReader, _ end: Result<Void, MultiServerError>) {
        switch reader {
        case .none: break
        case .handler(let handler):
            switch end {
            case .success: handler(.success(nil))
            case .failure(let error): handler(.failure(error))
            }
        case .queue(let queue): queue.finish(end)
        }
    }

    // MARK: writes (loop thread)

    /// Loop thread: bytes the C core accepted and has not completed.
    func writeQueueSizeOnLoop() -> Int { closed ? 0 : ms_stream_write_queue_size(stream) }

    /// Queues a write. It goes to the C core at once while the stream is
    /// below its high-water mark (`ms_stream_writable`) and nothing waits
    /// before it; otherwise it waits here, without a copy, until the drain
    /// callback says the C queue fell below the mark. So however many tasks
    /// write at once, the C core holds at most about one high-water mark
    /// plus one write.
    func writeOnLoop(id: UInt64, _ bytes: [UInt8], _ done: CheckedContinuation<Void, any Error>) {
        if canceledEarly.remove(id) != nil {
            done.resume(throwing: MultiServerError.canceled.during(.write))
            return
        }
        guard !closing else {
            done.resume(throwing: MultiServerError.closed.during(.write))
            return
        }
        pending.append(.write(id: id, bytes, done))
        pumpOnLoop()
    }

    /// Queues the shutdown behind every earlier write.
    func shutdownOnLoop(id: UInt64, _ done: CheckedContinuation<Void, any Error>) {
        if canceledEarly.remove(id) != nil {
            done.resume(throwing: MultiServerError.canceled.during(.shutdown))
            return
        }
        guard !closing else {
            done.resume(throwing: MultiServerError.closed.during(.shutdown))
            return
        }
        pending.append(.shutdown(id: id, done))
        pumpOnLoop()
    }

    /// A task waiting in `write` or `shutdownWrite` was cancelled. A request
    /// still waiting here is withdrawn (nothing was sent). One the C core
    /// already has cannot be withdrawn without leaving a partial write in
    /// the byte stream, so the connection is closed: the request then
    /// completes with `MS_ECANCELED`.
    func cancelOnLoop(id: UInt64) {
        if let index = pending.firstIndex(where: { $0.id == id }) {
            let request = pending.remove(at: index)
            request.fail(MultiServerError.canceled)
            pumpOnLoop()
        } else if inFlight.contains(id) {
            closeOnLoop(nil)
        } else if !closed {
            canceledEarly.insert(id)
        }
    }

    /// Hands waiting requests to the C core while it is below its high-water mark.
    fileprivate func pumpOnLoop() {
        while !closing, let first = pending.first {
            switch first {
            case .write(let id, let bytes, let done):
                // Below the mark, or shut down (the C core then refuses the
                // write at once, MS_ESHUTDOWN, rather than never draining).
                guard shutdownSubmitted || belowHighWaterOnLoop else { return }
                pending.removeFirst()
                submitWriteOnLoop(id: id, bytes, done)
            case .shutdown(let id, let done):
                pending.removeFirst()
                shutdownSubmitted = true
                submitShutdownOnLoop(id: id, done)
            }
        }
    }

    private func submitWriteOnLoop(id: UInt64, _ bytes: [UInt8], _ done: CheckedContinuation<Void, any Error>) {
        let request = WriteRequest(id: id, bytes, done)
        let arg = Unmanaged.passRetained(request).toOpaque()
        let rc = ms_stream_write(stream, request.buf, 1, streamWriteCallback, arg)
        if rc != 0 {
            // A write that failed to start never calls back.
            Unmanaged<WriteRequest>.fromOpaque(arg).release()
            done.resume(throwing: MultiServerError(rawValue: rc, operation: .write))
        } else {
            inFlight.insert(id)
        }
    }

    private func submitShutdownOnLoop(id: UInt64, _ done: CheckedContinuation<Void, any Error>) {
        let request = ShutdownRequest(id: id, done)
        let arg = Unmanaged.passRetained(request).toOpaque()
        let rc = ms_stream_shutdown(stream, streamShutdownCallback, arg)
        if rc != 0 {
            Unmanaged<ShutdownRequest>.fromOpaque(arg).release()
            done.resume(throwing: MultiServerError(rawValue: rc, operation: .shutdown))
        } else {
            inFlight.insert(id)
        }
    }

    fileprivate func didCompleteOnLoop(id: UInt64) {
        inFlight.remove(id)
        pumpOnLoop()
    }

    // MARK: close (loop thread)

    /// On the loop thread: bytes delivered to the reader and written, as of
    /// now (kept at close).
    func byteCountsOnLoop() -> (UInt64, UInt64) {
        if closed { return finalCounts }
        var rx: UInt64 = 0, tx: UInt64 = 0
        ms_stream_bytes(stream, &rx, &tx)
        return (rx, tx)
    }
    private var finalCounts: (UInt64, UInt64) = (0, 0)

    func closeOnLoop(_ waiter: (@Sendable () -> Void)?) {
        if closed {
            waiter?()
            return
        }
        if let waiter { closeWaiters.append(waiter) }
        guard !closing else { return }
        closing = true
        reading = false
        // Requests that never reached the C core end as the C core ends
        // its queued ones: canceled.
        let waiting = pending
        pending = []
        for request in waiting { request.fail(MultiServerError.canceled) }
        var rx: UInt64 = 0, tx: UInt64 = 0
        ms_stream_bytes(stream, &rx, &tx)
        finalCounts = (rx, tx)
        ms_stream_close(stream, streamCloseCallback, context)
    }

    /// In the close callback: drops our reference to the authorization box
    /// (outside the lock, in case its deinit runs here). The C core releases
    /// its own right after this callback returns, through authorize_free.
    private func releaseAuthorization() {
        let box = authorizationBox.withLock { box in
            defer { box = nil }
            return box
        }
        withExtendedLifetime(box) {}
    }

    fileprivate func didCloseOnLoop() {
        closed = true
        releaseAuthorization()
        endReadsOnLoop(.failure(.closed.during(.read)))
        reader = .none
        let waiters = closeWaiters
        closeWaiters = []
        if !waiters.isEmpty {
            // close() returns on the next loop iteration, once the C core has
            // finished the close (and given the authorization value back
            // through authorize_free, right after this callback). Posted
            // before registry.remove, which may start finishing a shutdown.
            let resumeAll: @Sendable () -> Void = { for waiter in waiters { waiter() } }
            if !loop.execute(resumeAll) { resumeAll() }
        }
        loop.registry.remove(self)
    }
}

/// One ms_stream_write in flight: owns a copy of the bytes (and the ms_buf_t
/// describing them) until the write callback fires.
private final class WriteRequest {
    let id: UInt64
    let bytes: UnsafeMutableRawBufferPointer
    let buf: UnsafeMutablePointer<ms_buf_t>
    let done: CheckedContinuation<Void, any Error>

    init(id: UInt64, _ source: [UInt8], _ done: CheckedContinuation<Void, any Error>) {
        self.id = id
        bytes = .allocate(byteCount: max(source.count, 1), alignment: 1)
        bytes.copyBytes(from: source)
        buf = .allocate(capacity: 1)
        buf.initialize(to: ms_buf_t(base: UnsafeRawPointer(bytes.baseAddress), len: source.count))
        self.done = done
    }

    deinit {
        buf.deallocate()
        bytes.deallocate()
    }
}

private final class ShutdownRequest {
    let id: UInt64
    let done: CheckedContinuation<Void, any Error>
    init(id: UInt64, _ done: CheckedContinuation<Void, any Error>) {
        self.id = id
        self.done = done
    }
}

/// A write or shutdown waiting for the stream to drain below its high-water mark.
enum PendingOutbound {
    case write(id: UInt64, [UInt8], CheckedContinuation<Void, any Error>)
    case shutdown(id: UInt64, CheckedContinuation<Void, any Error>)

    var id: UInt64 {
        switch self {
        case .write(let id, _, _), .shutdown(let id, _): return id
        }
    }

    func fail(_ error: MultiServerError) {
        switch self {
        case .write(_, _, let done): done.resume(throwing: error.during(.write))
        case .shutdown(_, let done): done.resume(throwing: error.during(.shutdown))
        }
    }
}

// MARK: - C callbacks (all on the loop thread)

private func streamReadCallback(_ s: OpaquePointer?, _ status: Int32, _ data: UnsafePointer<UInt8>?,
                                _ len: Int, _ arg: UnsafeMutableRawPointer?) {
    guard let arg else { return }
    Unmanaged<StreamCore>.fromOpaque(arg).takeUnretainedValue()
        .didReadOnLoop(status: status, data: data, count: len)
}

private func streamWriteCallback(_ s: OpaquePointer?, _ status: Int32, _ arg: UnsafeMutableRawPointer?) {
    guard let arg else { return }
    let request = Unmanaged<WriteRequest>.fromOpaque(arg).takeRetainedValue()
    if let s, let core = ms_stream_data(s) {
        Unmanaged<StreamCore>.fromOpaque(core).takeUnretainedValue().didCompleteOnLoop(id: request.id)
    }
    if status == 0 {
        request.done.resume()
    } else {
        request.done.resume(throwing: MultiServerError(rawValue: status, operation: .write))
    }
}

private func streamShutdownCallback(_ s: OpaquePointer?, _ status: Int32, _ arg: UnsafeMutableRawPointer?) {
    guard let arg else { return }
    let request = Unmanaged<ShutdownRequest>.fromOpaque(arg).takeRetainedValue()
    if let s, let core = ms_stream_data(s) {
        Unmanaged<StreamCore>.fromOpaque(core).takeUnretainedValue().didCompleteOnLoop(id: request.id)
    }
    if status == 0 {
        request.done.resume()
    } else {
        request.done.resume(throwing: MultiServerError(rawValue: status, operation: .shutdown))
    }
}

private func streamDrainCallback(_ s: OpaquePointer?, _ arg: UnsafeMutableRawPointer?) {
    guard let arg else { return }
    Unmanaged<StreamCore>.fromOpaque(arg).takeUnretainedValue().pumpOnLoop()
}

private func streamCloseCallback(_ s: OpaquePointer?, _ arg: UnsafeMutableRawPointer?) {
    guard let arg else { return }
    // The last callback for this stream: release the reference the stream held.
    Unmanaged<StreamCore>.fromOpaque(arg).takeRetainedValue().didCloseOnLoop()
}

// MARK: - AsyncSequence buffer

/// The one inbound buffer of a connection: incoming chunks waiting for the
/// task that iterates the connection.
///
/// Created once per `Connection`, so that a loop that stops early (`break`)
/// and a later loop share it: the later one continues where the first
/// stopped and no chunk is lost. Only one task may wait at a time; a second
/// concurrent `next()` throws ``MultiServerError/busy``.
///
/// The loop thread pushes; the consumer pulls one chunk per `next()`. Reading
/// stops (`ms_stream_read_stop`) when `highWater` bytes are buffered and
/// restarts once the consumer has taken the buffer below `lowWater`, so memory
/// stays bounded however slow the consumer is. Once the read side ended, every
/// later `next()` returns nil (clean end) or throws the same error again.
final class ChunkQueue: Sendable {
    static let highWater = 1 << 20
    static let lowWater = 1 << 18

    private struct State {
        var chunks: [[UInt8]] = []
        var head = 0
        var bytes = 0
        var started = false
        var paused = false
        var end: Result<Void, MultiServerError>?
        var waiter: CheckedContinuation<[UInt8]?, any Error>?
    }

    private let state = Locked(State())
    private let core: StreamCore

    init(core: StreamCore) { self.core = core }

    /// The consumer side: the next chunk, nil at the clean end, or the error.
    func next() async throws(MultiServerError) -> [UInt8]? {
        do {
            return try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { (cont: CheckedContinuation<[UInt8]?, any Error>) in
                    enum Next {
                        case chunk([UInt8], resume: Bool), end(Result<Void, MultiServerError>)
                        case fail(MultiServerError), wait(start: Bool, resume: Bool)
                    }
                    let next: Next = state.withLock { s in
                        if s.head < s.chunks.count {
                            let chunk = s.chunks[s.head]
                            s.head += 1
                            if s.head == s.chunks.count || s.head > 64 {
                                s.chunks.removeFirst(s.head)
                                s.head = 0
                            }
                            s.bytes -= chunk.count
                            let resume = s.paused && s.bytes <= Self.lowWater
                            if resume { s.paused = false }
                            return .chunk(chunk, resume: resume)
                        }
                        if let end = s.end { return .end(end) }
                        if Task.isCancelled { return .fail(MultiServerError.canceled.during(.read)) }
                        if s.waiter != nil {
                            return .fail(MultiServerError(rawValue: MS_EBUSY.rawValue,
                                                          reason: "another task is already reading this connection",
                                                          stage: .read))
                        }
                        s.waiter = cont
                        let start = !s.started
                        s.started = true
                        let resume = s.paused
                        s.paused = false
                        return .wait(start: start, resume: resume)
                    }
                    switch next {
                    case .chunk(let chunk, let resume):
                        if resume { requestMore() }
                        cont.resume(returning: chunk)
                    case .end(.success): cont.resume(returning: nil)
                    case .end(.failure(let error)): cont.resume(throwing: error)
                    case .fail(let error): cont.resume(throwing: error)
                    case .wait(let start, let resume):
                        if start {
                            let core = self.core
                            if !core.loop.execute({ core.setReaderOnLoop(.queue(self)) }) {
                                finish(.failure(.closed.during(.read)))
                            }
                        } else if resume {
                            requestMore()
                        }
                    }
                }
            } onCancel: {
                let waiter = state.withLock { s in
                    let w = s.waiter
                    s.waiter = nil
                    return w
                }
                // Only the wait is withdrawn: chunks that arrive later stay
                // buffered for the next iteration.
                waiter?.resume(throwing: MultiServerError.canceled.during(.read))
            }
        } catch {
            throw MultiServerError.from(error, .read)
        }
    }

    private func requestMore() {
        let core = self.core
        core.loop.execute { core.resumeReadingOnLoop(for: self) }
    }

    /// Loop thread: a chunk arrived. Returns true when reading should pause.
    func push(_ chunk: [UInt8]) -> Bool {
        let (waiter, pause): (CheckedContinuation<[UInt8]?, any Error>?, Bool) = state.withLock { s in
            if let waiter = s.waiter {
                s.waiter = nil
                return (waiter, false)
            }
            s.chunks.append(chunk)
            s.bytes += chunk.count
            if s.bytes >= Self.highWater && !s.paused {
                s.paused = true
                return (nil, true)
            }
            return (nil, false)
        }
        waiter?.resume(returning: chunk)
        return pause
    }

    /// Loop thread (or a failed start): the read side ended. Buffered chunks
    /// are still delivered before the end.
    func finish(_ end: Result<Void, MultiServerError>) {
        let waiter: CheckedContinuation<[UInt8]?, any Error>? = state.withLock { s in
            guard s.end == nil else { return nil }
            s.end = end
            let w = s.waiter
            s.waiter = nil
            return w
        }
        guard let waiter else { return }
        switch end {
        case .success: waiter.resume(returning: nil)
        case .failure(let error): waiter.resume(throwing: error)
        }
    }
}
