internal import CMultiServer
public import Logging

/// The logger the C core's log hook (multiserver_log.h) writes to. Immutable,
/// so Sendable without help.
final class LoggerBox: Sendable {
    let logger: Logger
    init(_ logger: Logger) { self.logger = logger }
}

/// The C hook: on the loop thread, synchronously inside the core.
private func logCallback(_ level: Int32, _ subsystem: UnsafePointer<CChar>?,
                         _ message: UnsafePointer<CChar>?, _ arg: UnsafeMutableRawPointer?) {
    guard let arg else { return }
    let box = Unmanaged<LoggerBox>.fromOpaque(arg).takeUnretainedValue()
    let sub = subsystem.map { String(cString: $0) } ?? ""
    let text = message.map { String(cString: $0) } ?? ""
    box.logger.log(level: Logger.Level(multiserver: level), "\(text)",
                   metadata: ["multiserver.subsystem": "\(sub)"], source: "MultiServer")
}

extension Logger.Level {
    /// MS_LOG_ERROR, MS_LOG_WARN, MS_LOG_INFO, MS_LOG_DEBUG.
    init(multiserver level: Int32) {
        switch Int(level) {
        case Int(MS_LOG_ERROR): self = .error
        case Int(MS_LOG_WARN): self = .warning
        case Int(MS_LOG_INFO): self = .info
        default: self = .debug
        }
    }

    /// The C core's least severe level that this level lets through
    /// (.trace and .debug: debug; .notice: info; .critical: error).
    var multiserverMinimum: Int32 {
        switch self {
        case .trace, .debug: Int32(MS_LOG_DEBUG)
        case .info, .notice: Int32(MS_LOG_INFO)
        case .warning: Int32(MS_LOG_WARN)
        case .error, .critical: Int32(MS_LOG_ERROR)
        }
    }
}

extension MultiServer {
    /// Sends what the C core logs (a connection refused by a limit, a
    /// handshake that failed on an accepted connection, a connect
    /// alternative that failed and the connect's outcome, an idle timeout)
    /// to `logger`, at or above `logger.logLevel`; nil stops logging.
    ///
    /// Levels map error → `.error`, warn → `.warning`, info → `.info`,
    /// debug → `.debug`; the C subsystem ("listen", "connect", "limits", or
    /// a plugin's) is the metadata value `multiserver.subsystem`, and the
    /// source is "MultiServer". The logger's handler is called on the loop
    /// thread: it must not block. The level is read once, here: set the
    /// logger again to change it.
    ///
    /// The corresponding C function is `ms_set_log`.
    public func setLogger(_ logger: Logger?) throws {
        let box = logger.map(LoggerBox.init)
        let minimum = logger?.logLevel.multiserverMinimum ?? Int32(MS_LOG_DEBUG)
        let loop = self.loop
        // Kept until the EventLoop goes, after ms_delete: the C core may log
        // up to the end (a connect canceled by shutdown), and a replaced box
        // costs only its memory.
        if let box { loop.keepAlive(box) }
        let rc: Int32? = loop.sync {
            let arg = box.map { Unmanaged.passUnretained($0).toOpaque() }
            return ms_set_log(loop.ms, arg == nil ? nil : logCallback, arg, minimum)
        }
        guard let rc else { throw MultiServerError.closed }
        guard rc == 0 else { throw MultiServerError(rawValue: rc, reason: "cannot set the logger") }
    }
}
