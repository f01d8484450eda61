internal import CMultiServer

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A transport written in Swift, usable in addresses as the first section
/// (`memswift:a~shs`) next to the built-in ones once registered with
/// ``MultiServer/register(transport:)``.
///
/// Everything happens on the multiserver's loop thread, synchronously: the
/// transport's hooks, and every call on the ``TransportListener`` and
/// ``TransportStream`` values it is given or makes. Keep the calls short.
///
///     struct Mem: StreamTransport {
///         let name = "mem"
///         func listen(fields: [String], listener: TransportListener) throws -> any TransportListening { … }
///         func dial(fields: [String], context: TransportContext) throws -> TransportStream { … }
///     }
///
/// Bridges the C plugin interface (`ms_protocol_t` with
/// `kind = MS_PROTO_TRANSPORT`, `listen`/`listen_close`/`dial`, and streams
/// made with `ms_stream_new`: `multiserver_plugin.h`).
public protocol StreamTransport: Sendable {
    /// The section name in addresses (`[a-z0-9]+`, not taken by another protocol).
    var name: String { get }
    /// Starts listening on a section's (unescaped) fields. Hand accepted
    /// streams to ``TransportListener/accept(_:)``; the advertised address
    /// is the section as written unless ``TransportListener/setAddress(_:)``
    /// is called here. Throw a ``MultiServerError`` (with a reason) to refuse.
    func listen(fields: [String], listener: TransportListener) throws -> any TransportListening
    /// Connects, synchronously: returns the client's stream, or throws a
    /// ``MultiServerError`` (its reason becomes the connect error's).
    func dial(fields: [String], context: TransportContext) throws -> TransportStream
}

/// One listening section of a ``StreamTransport``, on the loop thread.
public protocol TransportListening: AnyObject {
    /// The listener closes: accept nothing more. Called once.
    func close()
}

/// What a ``TransportStream`` is made in: one multiserver's loop. Valid on
/// that loop thread only, while the hook it was given to (or the listener it
/// belongs to) lives.
public struct TransportContext {
    let ms: OpaquePointer
}

/// A listener of a ``StreamTransport``, as the C core sees it (`ms_plisten_t`).
/// Loop thread only; unusable (``isClosed``) once the listener has closed.
public final class TransportListener {
    private var pl: OpaquePointer?
    private let ms: OpaquePointer
    fileprivate var listening: (any TransportListening)?
    fileprivate var addressSet = false

    fileprivate init(pl: OpaquePointer) {
        self.pl = pl
        ms = ms_plisten_ms(pl)
    }

    /// The loop streams for this listener are made in.
    public var context: TransportContext { TransportContext(ms: ms) }

    /// True once the listener has closed.
    public var isClosed: Bool { pl == nil }

    /// Sets the printed (escaped) section a client dials to reach this
    /// listener, e.g. `"memswift:a"`. Only during ``StreamTransport/listen(fields:listener:)``.
    public func setAddress(_ section: String) throws {
        guard let pl else { throw MultiServerError.closed.during(.listen) }
        let rc = ms_plisten_set_address(pl, section)
        guard rc == 0 else { throw MultiServerError(rawValue: rc, reason: "address \"\(section)\"", stage: .listen) }
        addressSet = true
    }

    /// Hands over an accepted stream (the server's end). Throws
    /// ``MultiServerError/closed`` once the listener has closed (the stream
    /// is then closed).
    public func accept(_ stream: TransportStream) throws {
        guard let pl, let s = stream.handOver() else {
            stream.discard()
            throw MultiServerError.closed.during(.accept)
        }
        ms_stream_set_server(s, true)
        ms_plisten_incoming(pl, s)
    }

    fileprivate func closed() -> OpaquePointer? {
        defer { pl = nil }
        return pl
    }
}

/// What a ``TransportStream`` calls with the bytes written to it. Called on
/// the loop thread, synchronously.
public protocol TransportStreamHandler: AnyObject {
    /// Bytes written by the layer above. Throw (e.g.
    /// ``MultiServerError/brokenPipe``) to fail the write.
    func write(_ bytes: [UInt8]) throws
    /// The write side has ended (every earlier write was handed on).
    func shutdownWrite()
    /// The stream is torn down: no more calls, and the stream must not be
    /// used any more (``TransportStream/isClosed`` is true).
    func close()
}

/// One stream of a Swift transport (`ms_stream_t` with Swift stream ops).
/// Loop thread only. Bytes given to ``receive(_:)`` are delivered to the
/// reader on a later loop turn, in order, while it reads: calling it from a
/// handler's `write` (an in-memory pair) never re-enters the C core.
public final class TransportStream {
    private var stream: OpaquePointer?
    private var handler: (any TransportStreamHandler)?
    private var pending: [[UInt8]] = []
    private var endStatus: Int32?
    private var ended = false
    private var handedOver = false
    private let node: UnsafeMutablePointer<ms_defer_t>
    private let ms: OpaquePointer

    /// A new stream in context's loop, whose written bytes go to handler
    /// (held until the stream closes). address is the printed section of
    /// the peer as this end sees it (`"memswift:a"`).
    public init(context: TransportContext, address: String, handler: any TransportStreamHandler) throws {
        ms = context.ms
        node = .allocate(capacity: 1)
        node.initialize(to: ms_defer_t())
        self.handler = handler
        // Unretained until handed over (handOver retains it for the core).
        guard let s = ms_stream_new(context.ms, transportStreamOps, Unmanaged.passUnretained(self).toOpaque(), address) else {
            node.deallocate()
            throw MultiServerError(rawValue: MS_ENOMEM.rawValue, reason: "transport stream", stage: .connect)
        }
        stream = s
    }

    deinit {
        node.deallocate()
    }

    /// True once the stream has closed (or was never handed over and discarded).
    public var isClosed: Bool { stream == nil }

    /// Bytes from the peer, delivered to the reader on a later turn.
    public func receive(_ bytes: [UInt8]) {
        guard stream != nil, endStatus == nil, !bytes.isEmpty else { return }
        pending.append(bytes)
        schedule()
    }

    /// The peer's write side has ended: the reader gets the end after the
    /// bytes received before.
    public func receiveEnd() { fail(MS_EOF.rawValue) }

    /// The peer failed or vanished: the reader gets error (after the bytes
    /// received before).
    public func receiveError(_ error: MultiServerError) { fail(error.rawValue) }

    private func fail(_ status: Int32) {
        guard stream != nil, endStatus == nil else { return }
        endStatus = status
        schedule()
    }

    private func schedule() {
        guard let stream, ms_stream_is_reading(stream) else { return }
        ms_defer(ms, node, transportStreamDeliver, Unmanaged.passUnretained(self).toOpaque())
    }

    fileprivate func deliver() {
        while let stream, ms_stream_is_reading(stream), !ms_stream_is_closing(stream) {
            if !pending.isEmpty {
                var chunk = pending.removeFirst()
                chunk.withUnsafeMutableBufferPointer { ms_stream_emit_read(stream, 0, $0.baseAddress, $0.count) }
            } else if let endStatus, !ended {
                ended = true
                ms_stream_emit_read(stream, endStatus, nil, 0)
            } else {
                return
            }
        }
    }

    /// The C stream, retained by it from now until its close hook.
    fileprivate func handOver() -> OpaquePointer? {
        guard let stream, !handedOver else { return nil }
        handedOver = true
        _ = Unmanaged.passRetained(self)
        return stream
    }

    /// Closes a stream that was made but is not going to be handed over
    /// (returned from ``StreamTransport/dial(fields:context:)`` or given to
    /// ``TransportListener/accept(_:)``): every stream made must be one or
    /// the other, or the multiserver waits for it at shutdown.
    public func discard() {
        guard let stream = handOver() else { return }
        ms_stream_close(stream, nil, nil)
    }

    fileprivate static func of(_ s: OpaquePointer?) -> TransportStream {
        Unmanaged<TransportStream>.fromOpaque(ms_stream_impl(s)!).takeUnretainedValue()
    }

    fileprivate func write(_ bytes: [UInt8]) -> Int32 {
        guard let handler else { return MS_ECLOSED.rawValue }
        do {
            try handler.write(bytes)
            return 0
        } catch let error as MultiServerError {
            return error.rawValue
        } catch {
            return MS_EINVAL.rawValue
        }
    }

    fileprivate func readStart() {
        if !pending.isEmpty || (endStatus != nil && !ended) { schedule() }
    }

    fileprivate func shutdown() { handler?.shutdownWrite() }

    fileprivate func close(_ s: OpaquePointer) {
        ms_defer_cancel(ms, node)
        stream = nil
        pending = []
        let handler = self.handler
        self.handler = nil
        handler?.close()
        ms_stream_closed(s)
        // The reference handOver took.
        Unmanaged.passUnretained(self).release()
    }
}

extension MultiServer {
    /// Registers a transport written in Swift under its name, for every later
    /// listen and connect of this multiserver. Throws
    /// ``MultiServerError/alreadyExists`` when the name is taken.
    /// The corresponding C function is `ms_register`.
    public func register(transport: some StreamTransport) throws {
        let registration = TransportRegistration(transport)
        let loop = self.loop
        guard let rc = loop.sync({ ms_register(loop.ms, registration.proto, registration.pdata) }) else {
            throw MultiServerError.closed.during(.register)
        }
        guard rc == 0 else {
            throw MultiServerError(rawValue: rc, reason: "transport \"\(transport.name)\"", stage: .register)
        }
        // The C core keeps pointers into it until ms_delete.
        loop.keepAlive(registration)
    }
}

/// What ms_register keeps pointers to: the ms_protocol_t, its name and the
/// transport.
///
/// `@unchecked Sendable`: every stored property is written in `init` and
/// never again; the C struct is only read (by the C core, on the loop
/// thread) until `deinit`, which runs after ms_delete (the EventLoop holds
/// the registration until then), and the transport itself is Sendable.
final class TransportRegistration: @unchecked Sendable {
    let transport: any StreamTransport
    let proto: UnsafeMutablePointer<ms_protocol_t>
    private let name: UnsafeMutablePointer<CChar>

    init(_ transport: some StreamTransport) {
        self.transport = transport
        name = strdup(transport.name)
        proto = .allocate(capacity: 1)
        proto.initialize(to: ms_protocol_t())
        proto.pointee.size = MemoryLayout<ms_protocol_t>.size
        proto.pointee.name = UnsafePointer(name)
        proto.pointee.kind = Int32(MS_PROTO_TRANSPORT)
        proto.pointee.listen = transportListen
        proto.pointee.listen_close = transportListenClose
        proto.pointee.dial = transportDial
        proto.pointee.dial_cancel = transportDialCancel
    }

    var pdata: UnsafeMutableRawPointer { Unmanaged.passUnretained(self).toOpaque() }

    static func of(_ pdata: UnsafeMutableRawPointer?) -> TransportRegistration {
        Unmanaged<TransportRegistration>.fromOpaque(pdata!).takeUnretainedValue()
    }

    deinit {
        proto.deinitialize(count: 1)
        proto.deallocate()
        free(name)
    }
}

// MARK: - C hooks (all on the loop thread)

/// The stream ops every TransportStream shares. `nonisolated(unsafe)`: the
/// pointer is written once (the lazy global initializer is thread-safe) and
/// the struct behind it is never written again, only read by the C core.
nonisolated(unsafe) private let transportStreamOps: UnsafeMutablePointer<ms_stream_ops_t> = {
    let ops = UnsafeMutablePointer<ms_stream_ops_t>.allocate(capacity: 1)
    ops.initialize(to: ms_stream_ops_t())
    ops.pointee.size = MemoryLayout<ms_stream_ops_t>.size
    ops.pointee.write = transportStreamWrite
    ops.pointee.read_start = transportStreamReadStart
    ops.pointee.read_stop = transportStreamReadStop
    ops.pointee.shutdown = transportStreamShutdown
    ops.pointee.close = transportStreamClose
    return ops
}()

private func fields(of sec: UnsafePointer<ms_section_t>) -> [String] {
    (0..<sec.pointee.nfields).map { String(cString: sec.pointee.fields[$0]!) }
}

private func printed(_ sec: UnsafePointer<ms_section_t>) -> String {
    var text = String(cString: sec.pointee.name)
    for i in 0..<sec.pointee.nfields {
        let field = sec.pointee.fields[i]!
        let len = sec.pointee.field_lens[i]
        let need = ms_addr_escape(field, len, nil, 0)
        var buf = [CChar](repeating: 0, count: need + 1)
        _ = ms_addr_escape(field, len, &buf, buf.count)
        text += ":" + String(decoding: buf.prefix(need).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
    return text
}

private func failure(_ error: any Error) -> (Int32, String) {
    if let error = error as? MultiServerError {
        return (error.rawValue, error.reason ?? error.message)
    }
    return (MS_EINVAL.rawValue, "\(error)")
}

private func transportListen(_ pl: OpaquePointer?, _ sec: UnsafePointer<ms_section_t>?,
                             _ pdata: UnsafeMutableRawPointer?) -> Int32 {
    guard let pl, let sec, let pdata else { return MS_EINVAL.rawValue }
    let registration = TransportRegistration.of(pdata)
    let listener = TransportListener(pl: pl)
    do {
        listener.listening = try registration.transport.listen(fields: fields(of: sec), listener: listener)
        if !listener.addressSet { try listener.setAddress(printed(sec)) }
    } catch {
        listener.listening?.close()
        _ = listener.closed()
        let (rc, reason) = failure(error)
        ms_plisten_error(pl, rc, "\(registration.transport.name): \(reason)")
        return rc
    }
    // Released in transportListenClose.
    ms_plisten_set_impl(pl, Unmanaged.passRetained(listener).toOpaque())
    return 0
}

private func transportListenClose(_ pl: OpaquePointer?) {
    guard let pl, let impl = ms_plisten_impl(pl) else { return }
    let listener = Unmanaged<TransportListener>.fromOpaque(impl).takeRetainedValue()
    let listening = listener.listening
    listener.listening = nil
    listening?.close()
    _ = listener.closed()
    ms_plisten_closed(pl)
}

private func transportDial(_ pd: OpaquePointer?, _ sec: UnsafePointer<ms_section_t>?,
                           _ pdata: UnsafeMutableRawPointer?) -> Int32 {
    guard let pd, let sec, let pdata else { return MS_EINVAL.rawValue }
    let registration = TransportRegistration.of(pdata)
    do {
        let stream = try registration.transport.dial(fields: fields(of: sec), context: TransportContext(ms: ms_pdial_ms(pd)))
        guard let s = stream.handOver() else {
            throw MultiServerError(rawValue: MS_ECLOSED.rawValue, reason: "stream already handed over")
        }
        ms_stream_set_server(s, false)
        ms_pdial_done(pd, 0, s, nil)
    } catch {
        let (rc, reason) = failure(error)
        ms_pdial_done(pd, rc, nil, "\(printed(sec)): \(reason)")
    }
    return 0
}

/// The dial finishes inside transportDial: nothing is ever pending.
private func transportDialCancel(_ pd: OpaquePointer?) {}

private func transportStreamDeliver(_ arg: UnsafeMutableRawPointer?) {
    Unmanaged<TransportStream>.fromOpaque(arg!).takeUnretainedValue().deliver()
}

private func transportStreamWrite(_ s: OpaquePointer?, _ req: OpaquePointer?, _ bufs: UnsafePointer<ms_buf_t>?,
                                  _ nbufs: UInt32) -> Int32 {
    guard let s, let req else { return MS_EINVAL.rawValue }
    var bytes: [UInt8] = []
    for i in 0..<Int(nbufs) {
        let buf = bufs![i]
        if let base = buf.base, buf.len > 0 {
            bytes.append(contentsOf: UnsafeRawBufferPointer(start: base, count: buf.len))
        }
    }
    let rc = TransportStream.of(s).write(bytes)
    if rc == 0 { ms_write_req_done(req, 0) }
    return rc
}

private func transportStreamReadStart(_ s: OpaquePointer?) -> Int32 {
    guard let s else { return MS_EINVAL.rawValue }
    TransportStream.of(s).readStart()
    return 0
}

private func transportStreamReadStop(_ s: OpaquePointer?) -> Int32 { 0 }

private func transportStreamShutdown(_ s: OpaquePointer?) -> Int32 {
    guard let s else { return MS_EINVAL.rawValue }
    TransportStream.of(s).shutdown()
    ms_stream_shutdown_done(s, 0)
    return 0
}

private func transportStreamClose(_ s: OpaquePointer?) {
    guard let s else { return }
    TransportStream.of(s).close(s)
}
