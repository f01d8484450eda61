internal import CMultiServer

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A byte transform written in Swift, usable in addresses as `~name` next to
/// the built-in ones (`net:127.0.0.1:8008~xor~shs`) once registered with
/// ``MultiServer/register(_:)``.
///
/// Each stream the transform wraps gets its own ``TransformSession``, made on
/// the multiserver's loop thread and used only there, synchronously: no
/// thread hop per chunk. Sessions may change sizes (compress, frame) or map
/// bytes one to one (the xor in the tests).
///
///     struct Xor: StreamTransform {
///         let name = "xor"
///         func makeSession(isServer: Bool) -> any TransformSession { XorSession() }
///     }
///
/// Bridges the C plugin interface (`ms_protocol_t` with `wrap`, and an
/// `ms_stream_ops_t` stream over the lower one: `multiserver_plugin.h`).
public protocol StreamTransform: Sendable {
    /// The section name in addresses (`[a-z0-9]+`, not taken by another protocol).
    var name: String { get }
    /// The state for one wrapped stream, on the loop thread. `isServer` is
    /// true on the accepting side.
    func makeSession(isServer: Bool) -> any TransformSession
}

/// One wrapped stream's state (see ``StreamTransform``). Called on the
/// multiserver's loop thread only, one call at a time: keep it short.
public protocol TransformSession: AnyObject {
    /// Bytes written by the layer above, on their way down.
    func encode(_ bytes: [UInt8]) -> [UInt8]
    /// Bytes read from the layer below, on their way up (an empty result
    /// delivers nothing, e.g. while a frame is incomplete).
    func decode(_ bytes: [UInt8]) -> [UInt8]
}

extension MultiServer {
    /// Registers a transform written in Swift under its name, for every
    /// later listen and connect of this multiserver. Register it on both
    /// peers. Throws ``MultiServerError/alreadyExists`` when the name is taken.
    /// The corresponding C function is `ms_register`.
    public func register(_ transform: some StreamTransform) throws {
        let registration = TransformRegistration(transform)
        let loop = self.loop
        guard let rc = loop.sync({ ms_register(loop.ms, registration.proto, registration.pdata) }) else {
            throw MultiServerError.closed.during(.register)
        }
        guard rc == 0 else {
            throw MultiServerError(rawValue: rc, reason: "transform \"\(transform.name)\"", stage: .register)
        }
        // The C core keeps pointers into it until ms_delete.
        loop.keepAlive(registration)
    }
}

/// What ms_register keeps pointers to: the ms_protocol_t, its name, the
/// stream ops of the streams it makes, and the transform.
///
/// `@unchecked Sendable`: every stored property is written in `init` and
/// never again; the C structs are only read (by the C core, on the loop
/// thread) until `deinit`, which runs after ms_delete (the EventLoop holds
/// the registration until then).
final class TransformRegistration: @unchecked Sendable {
    let transform: any StreamTransform
    let proto: UnsafeMutablePointer<ms_protocol_t>
    let ops: UnsafeMutablePointer<ms_stream_ops_t>
    private let name: UnsafeMutablePointer<CChar>

    init(_ transform: some StreamTransform) {
        self.transform = transform
        name = strdup(transform.name)
        ops = .allocate(capacity: 1)
        ops.initialize(to: ms_stream_ops_t())
        ops.pointee.size = MemoryLayout<ms_stream_ops_t>.size
        ops.pointee.write = transformWrite
        ops.pointee.read_start = transformReadStart
        ops.pointee.read_stop = transformReadStop
        ops.pointee.shutdown = transformShutdown
        ops.pointee.close = transformClose
        proto = .allocate(capacity: 1)
        proto.initialize(to: ms_protocol_t())
        proto.pointee.size = MemoryLayout<ms_protocol_t>.size
        proto.pointee.name = UnsafePointer(name)
        proto.pointee.kind = Int32(MS_PROTO_TRANSFORM)
        proto.pointee.wrap = transformWrap
        proto.pointee.wrap_cancel = transformWrapCancel
    }

    var pdata: UnsafeMutableRawPointer { Unmanaged.passUnretained(self).toOpaque() }

    deinit {
        proto.deinitialize(count: 1)
        proto.deallocate()
        ops.deinitialize(count: 1)
        ops.deallocate()
        free(name)
    }
}

/// One stream made by a Swift transform, over the stream below it. Not
/// Sendable: it lives on the loop thread, reached only through the C
/// pointers of its two streams. Retained once by `transformWrap`, released
/// by the lower stream's close callback (the last callback of either).
private final class TransformStream {
    let session: any TransformSession
    let lower: OpaquePointer
    var upper: OpaquePointer?

    init(session: any TransformSession, lower: OpaquePointer) {
        self.session = session
        self.lower = lower
    }

    var context: UnsafeMutableRawPointer { Unmanaged.passUnretained(self).toOpaque() }

    static func of(_ pointer: UnsafeMutableRawPointer?) -> TransformStream {
        Unmanaged<TransformStream>.fromOpaque(pointer!).takeUnretainedValue()
    }
}

/// One write handed to the lower stream: the encoded bytes and the upper
/// request to complete when the lower write does.
private final class TransformWrite {
    let request: OpaquePointer
    let bytes: UnsafeMutableRawBufferPointer
    let buf: UnsafeMutablePointer<ms_buf_t>

    init(request: OpaquePointer, encoded: [UInt8]) {
        self.request = request
        bytes = .allocate(byteCount: max(encoded.count, 1), alignment: 1)
        bytes.copyBytes(from: encoded)
        buf = .allocate(capacity: 1)
        buf.initialize(to: ms_buf_t(base: UnsafeRawPointer(bytes.baseAddress), len: encoded.count))
    }

    deinit {
        buf.deallocate()
        bytes.deallocate()
    }
}

// MARK: - C hooks (all on the loop thread)

private func transformWrap(_ pw: OpaquePointer?, _ lower: OpaquePointer?, _ sec: UnsafePointer<ms_section_t>?,
                           _ role: Int32, _ pdata: UnsafeMutableRawPointer?) -> Int32 {
    guard let pw, let lower, let pdata else { return MS_EINVAL.rawValue }
    let registration = Unmanaged<TransformRegistration>.fromOpaque(pdata).takeUnretainedValue()
    let session = registration.transform.makeSession(isServer: role == Int32(MS_ROLE_SERVER))
    let impl = TransformStream(session: session, lower: lower)
    let address = String(cString: ms_stream_address(lower)) + "~" + registration.transform.name
    guard let upper = ms_stream_new(ms_pwrap_ms(pw), registration.ops, impl.context, address) else {
        return MS_ENOMEM.rawValue
    }
    impl.upper = upper
    // Released in the lower stream's close callback.
    _ = Unmanaged.passRetained(impl)
    ms_pwrap_done(pw, 0, upper, nil)
    return 0
}

/// The wrap finishes inside transformWrap: nothing is ever pending.
private func transformWrapCancel(_ pw: OpaquePointer?) {}

private func transformWrite(_ s: OpaquePointer?, _ req: OpaquePointer?, _ bufs: UnsafePointer<ms_buf_t>?,
                            _ nbufs: UInt32) -> Int32 {
    guard let s, let req else { return MS_EINVAL.rawValue }
    let impl = TransformStream.of(ms_stream_impl(s))
    var plain: [UInt8] = []
    for i in 0..<Int(nbufs) {
        let buf = bufs![i]
        if let base = buf.base, buf.len > 0 {
            plain.append(contentsOf: UnsafeRawBufferPointer(start: base, count: buf.len))
        }
    }
    let write = TransformWrite(request: req, encoded: impl.session.encode(plain))
    let arg = Unmanaged.passRetained(write).toOpaque()
    let rc = ms_stream_write(impl.lower, write.buf, 1, transformLowerWriteDone, arg)
    if rc != 0 {
        Unmanaged<TransformWrite>.fromOpaque(arg).release()
    }
    return rc
}

private func transformLowerWriteDone(_ lower: OpaquePointer?, _ status: Int32, _ arg: UnsafeMutableRawPointer?) {
    guard let arg else { return }
    let write = Unmanaged<TransformWrite>.fromOpaque(arg).takeRetainedValue()
    ms_write_req_done(write.request, status)
}

private func transformReadStart(_ s: OpaquePointer?) -> Int32 {
    guard let s else { return MS_EINVAL.rawValue }
    let impl = TransformStream.of(ms_stream_impl(s))
    return ms_stream_read_start(impl.lower, transformLowerRead, impl.context)
}

private func transformReadStop(_ s: OpaquePointer?) -> Int32 {
    guard let s else { return MS_EINVAL.rawValue }
    return ms_stream_read_stop(TransformStream.of(ms_stream_impl(s)).lower)
}

private func transformLowerRead(_ lower: OpaquePointer?, _ status: Int32, _ data: UnsafePointer<UInt8>?,
                                _ len: Int, _ arg: UnsafeMutableRawPointer?) {
    let impl = TransformStream.of(arg)
    guard let upper = impl.upper else { return }
    guard status == 0 else {
        ms_stream_emit_read(upper, status, nil, 0)
        return
    }
    guard let data, len > 0 else { return }
    var decoded = impl.session.decode(Array(UnsafeBufferPointer(start: data, count: len)))
    guard !decoded.isEmpty else { return }
    decoded.withUnsafeMutableBufferPointer { ms_stream_emit_read(upper, 0, $0.baseAddress, $0.count) }
}

private func transformShutdown(_ s: OpaquePointer?) -> Int32 {
    guard let s else { return MS_EINVAL.rawValue }
    let impl = TransformStream.of(ms_stream_impl(s))
    return ms_stream_shutdown(impl.lower, transformLowerShutdownDone, impl.context)
}

private func transformLowerShutdownDone(_ lower: OpaquePointer?, _ status: Int32, _ arg: UnsafeMutableRawPointer?) {
    let impl = TransformStream.of(arg)
    if let upper = impl.upper { ms_stream_shutdown_done(upper, status) }
}

private func transformClose(_ s: OpaquePointer?) {
    guard let s else { return }
    let impl = TransformStream.of(ms_stream_impl(s))
    // The lower stream completes its queued writes (MS_ECANCELED, which
    // completes ours) before its close callback.
    ms_stream_close(impl.lower, transformLowerClosed, impl.context)
}

private func transformLowerClosed(_ lower: OpaquePointer?, _ arg: UnsafeMutableRawPointer?) {
    guard let arg else { return }
    let impl = Unmanaged<TransformStream>.fromOpaque(arg).takeRetainedValue()
    if let upper = impl.upper {
        impl.upper = nil
        ms_stream_closed(upper)
    }
}
