internal import CMultiServer

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// An error reported by the multiserver C core.
///
/// It keeps the C error code (`rawValue`: one of the library's own `MS_E*`
/// codes, or a libuv code, which on Unix is a negated `errno` such as
/// `-ECONNREFUSED`), the one-line reason the C core gave (which names the
/// failing alternative, protocol and stage, e.g.
/// `"alternative 1: net:127.0.0.1:8008: connection refused"` or
/// `"shs: handshake timed out (authorize hook did not answer)"`), and which
/// stage of this module failed.
///
/// Errors compare by code: `==`, `hash(into:)` and the `~=` pattern agree, as
/// they do for swift-system's `Errno`. The reason and the stage are context,
/// not identity:
///
///     do { _ = try await ms.connect(address) }
///     catch MultiServerError.connectionRefused { … }
///     catch MultiServerError.timedOut { … }
///     #expect(error == .handshakeFailed)   // whatever the reason text
///
/// Every throwing API of this module throws a `MultiServerError`, including
/// on cancellation: a task cancelled while it waits in this module gets
/// ``MultiServerError/canceled``, whatever it was doing (connecting, reading,
/// writing, shutting down); never `CancellationError`. The signatures use
/// untyped `throws`, deliberately and everywhere: with Swift 6.3.1 a typed
/// `throws(MultiServerError)` makes the compiler crash (SILGen ownership
/// verifier) on the common `catch let error as MultiServerError` in callers. The scoped helpers
/// (``MultiServer/withMultiServer(keys:appKey:handshakeTimeout:connectTimeout:allowRemoteNoauth:authorize:isolation:_:)``,
/// ``MultiServer/withListener(_:options:onError:handler:isolation:body:)``,
/// ``Connection/executeThenClose(isolation:_:)``) rethrow what their closures throw.
public struct MultiServerError: Error, Hashable, CustomStringConvertible, Sendable {
    /// What this module was doing when the error happened.
    ///
    /// A struct of static values rather than an enum, deliberately: new
    /// stages can be added without breaking a client's exhaustive `switch`.
    public struct Stage: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        public let rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }

        public static let create = Stage(rawValue: "create")
        public static let listen = Stage(rawValue: "listen")
        /// An incoming connection (its handshake) failed; the listener goes on.
        public static let accept = Stage(rawValue: "accept")
        public static let connect = Stage(rawValue: "connect")
        public static let authorize = Stage(rawValue: "authorize")
        public static let read = Stage(rawValue: "read")
        public static let write = Stage(rawValue: "write")
        public static let shutdown = Stage(rawValue: "shutdown")
        public static let close = Stage(rawValue: "close")
        public static let keys = Stage(rawValue: "keys")
        public static let appKey = Stage(rawValue: "appKey")
        /// Registering a protocol written in Swift.
        public static let register = Stage(rawValue: "register")
    }

    /// Kept for source compatibility: the stage used to be called operation.
    public typealias Operation = Stage

    /// The C error code: an `MS_E*` code or a (negative) libuv error code.
    public var rawValue: Int32
    /// The reason the C core gave, if any (one line; it names the failing
    /// alternative, protocol and handshake step, e.g. `"shs: msg3 (client auth)"`).
    public var reason: String?
    /// The stage that failed, if known.
    public var stage: Stage?

    /// The C error code (the same as ``rawValue``).
    public var code: Int32 { rawValue }

    /// The stage that failed (the former name of ``stage``).
    public var operation: Stage? {
        get { stage }
        set { stage = newValue }
    }

    /// Wraps a C error code.
    public init(rawValue: Int32, reason: String? = nil, stage: Stage? = nil) {
        self.rawValue = rawValue
        self.reason = reason
        self.stage = stage
    }

    /// Wraps a C error code (the former spelling of ``init(rawValue:reason:stage:)``).
    public init(rawValue: Int32, reason: String? = nil, operation: Stage?) {
        self.init(rawValue: rawValue, reason: reason, stage: operation)
    }

    init(_ code: Int32, reason: UnsafePointer<CChar>?, operation: Stage?) {
        let text = reason.map { String(cString: $0) }
        self.init(rawValue: code, reason: text?.isEmpty == true ? nil : text, stage: operation)
    }

    /// The human-readable message for the code. The corresponding C function is `ms_strerror`.
    public var message: String { String(cString: ms_strerror(rawValue)) }

    /// The symbolic name of the code (`"MS_EHANDSHAKE"`, `"ECONNREFUSED"`).
    /// The corresponding C function is `ms_err_name`.
    public var name: String { String(cString: ms_err_name(rawValue)) }

    public var description: String {
        var text = ""
        if let stage { text += "\(stage.rawValue): " }
        let message = self.message
        text += "\(message) (\(name))"
        if let reason, reason != message { text += ": \(reason)" }
        return text
    }

    /// The same error with its stage set (if it had none).
    func during(_ stage: Stage) -> MultiServerError {
        var copy = self
        if copy.stage == nil { copy.stage = stage }
        return copy
    }

    /// Any error from a continuation or a closure, as a `MultiServerError`
    /// (a `CancellationError` becomes ``canceled``).
    static func from(_ error: any Error, _ stage: Stage) -> MultiServerError {
        if let error = error as? MultiServerError { return error.during(stage) }
        if error is CancellationError { return MultiServerError.canceled.during(stage) }
        return MultiServerError(rawValue: MS_EINVAL.rawValue, reason: "\(error)", stage: stage)
    }

    /// True when `self` and `other` have the same code (the same as `==`).
    public func matches(_ other: MultiServerError) -> Bool { self == other }

    /// Equal codes (the library's timeout and cancellation codes are libuv's
    /// own values since 0.2; older builds' codes still compare equal).
    public static func == (lhs: MultiServerError, rhs: MultiServerError) -> Bool {
        canonical(lhs.rawValue) == canonical(rhs.rawValue)
    }

    public func hash(into hasher: inout Hasher) { hasher.combine(Self.canonical(rawValue)) }

    private static func canonical(_ code: Int32) -> Int32 {
        switch code {
        case -ETIMEDOUT: return MS_ETIMEDOUT.rawValue
        case -ECANCELED: return MS_ECANCELED.rawValue
        default: return code
        }
    }

    /// Pattern match by code, so that `catch MultiServerError.timedOut` works.
    public static func ~= (pattern: MultiServerError, value: any Error) -> Bool {
        guard let error = value as? MultiServerError else { return false }
        return pattern == error
    }

    /// Pattern match by code in a `switch` over a `MultiServerError`.
    public static func ~= (pattern: MultiServerError, value: MultiServerError) -> Bool {
        pattern == value
    }
}

extension MultiServerError {
    private static func ms(_ code: ms_errno_t) -> MultiServerError {
        MultiServerError(rawValue: code.rawValue)
    }

    /// The address does not follow the multiserver address grammar (`MS_EADDRESS`).
    public static let malformedAddress = ms(MS_EADDRESS)
    /// No registered protocol handles the address (`MS_EPROTO_UNKNOWN`).
    public static let unknownProtocol = ms(MS_EPROTO_UNKNOWN)
    /// The stack does not fit the protocols' kinds (`MS_ESTACK`).
    public static let badStack = ms(MS_ESTACK)
    /// A key is malformed (`MS_EKEY`).
    public static let badKey = ms(MS_EKEY)
    /// The secret handshake failed, e.g. a wrong server key or network key (`MS_EHANDSHAKE`).
    public static let handshakeFailed = ms(MS_EHANDSHAKE)
    /// The server's authorize hook rejected the client (`MS_EUNAUTHORIZED`).
    public static let unauthorized = ms(MS_EUNAUTHORIZED)
    /// A box-stream header failed to authenticate (`MS_EBOXHEADER`).
    public static let badBoxHeader = ms(MS_EBOXHEADER)
    /// A box-stream body failed to authenticate (`MS_EBOXBODY`).
    public static let badBoxBody = ms(MS_EBOXBODY)
    /// The peer hung up without an orderly end (`MS_EHANGUP`).
    public static let hangup = ms(MS_EHANGUP)
    /// A timeout expired (`MS_ETIMEDOUT`; also matches libuv's `ETIMEDOUT`).
    public static let timedOut = ms(MS_ETIMEDOUT)
    /// The operation was canceled (`MS_ECANCELED`; also matches libuv's `ECANCELED`).
    public static let canceled = ms(MS_ECANCELED)
    /// The stream, listener or multiserver is closed (`MS_ECLOSED`).
    public static let closed = ms(MS_ECLOSED)
    /// The write side was already shut down (`MS_ESHUTDOWN`).
    public static let writeShutDown = ms(MS_ESHUTDOWN)
    /// `noauth` was refused on a stack that leaves this device (`MS_ENOAUTH_REMOTE`).
    public static let noauthRefused = ms(MS_ENOAUTH_REMOTE)
    /// Every `;`-alternative of the address failed (`MS_EALLFAILED`).
    public static let allAlternativesFailed = ms(MS_EALLFAILED)
    /// A malformed protocol frame (`MS_EFRAME`).
    public static let malformedFrame = ms(MS_EFRAME)
    /// The secret file is malformed (`MS_ESECRETFILE`).
    public static let badSecretFile = ms(MS_ESECRETFILE)
    /// Out of memory (`MS_ENOMEM`).
    public static let outOfMemory = ms(MS_ENOMEM)
    /// An invalid argument (`MS_EINVAL`).
    public static let invalidArgument = ms(MS_EINVAL)
    /// Something already exists, e.g. the file a key pair is saved to (`MS_EEXIST`).
    public static let alreadyExists = ms(MS_EEXIST)
    /// A limit was exceeded (`MS_ELIMIT`).
    public static let limitExceeded = ms(MS_ELIMIT)
    /// A message failed its authentication tag: corrupt or forged (`MS_EDECRYPT`).
    public static let decryptFailed = ms(MS_EDECRYPT)
    /// Busy, e.g. tearing down (`MS_EBUSY`, libuv's `UV_EBUSY`).
    public static let busy = ms(MS_EBUSY)
    /// A proxy (SOCKS5, e.g. Tor) refused or could not carry out the request (`MS_EPROXY`).
    public static let proxyRefused = ms(MS_EPROXY)
    /// The peer refused the connection (libuv `UV_ECONNREFUSED`, `-ECONNREFUSED`).
    public static let connectionRefused = MultiServerError(rawValue: -ECONNREFUSED)
    /// The peer reset the connection (libuv `UV_ECONNRESET`).
    public static let connectionReset = MultiServerError(rawValue: -ECONNRESET)
    /// The local address is in use (libuv `UV_EADDRINUSE`).
    public static let addressInUse = MultiServerError(rawValue: -EADDRINUSE)
    /// Writing to a connection the peer closed (libuv `UV_EPIPE`).
    public static let brokenPipe = MultiServerError(rawValue: -EPIPE)
    /// A file does not exist (libuv `UV_ENOENT`), e.g. a missing secret file
    /// or unix socket.
    public static let noSuchFile = MultiServerError(rawValue: -ENOENT)
}
