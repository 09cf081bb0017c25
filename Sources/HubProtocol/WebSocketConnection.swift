import HubNative
import NIOCore

/// The life of one WebSocket connection after the upgrade, as a pure state machine: bytes and clock ticks in,
/// actions out. The channel handler performs the actions; nothing here does I/O or reads a clock.
///
/// It answers pings, runs the close handshake (RFC 6455 §7: reply to a close, and as the server close TCP first,
/// §7.1.1), fails the connection with the right code on a protocol error (§7.1.7), and keeps the heartbeat: a ping
/// every `pingInterval`, and the connection is dropped when no pong comes within `pongTimeout`.
public struct WebSocketConnection {
    public struct Configuration: Sendable {
        public var maxFrameSize: Int
        public var maxMessageSize: Int
        /// Nanoseconds between pings sent to the peer (0 disables).
        public var pingInterval: Int64
        /// Nanoseconds a peer has to answer a ping.
        public var pongTimeout: Int64
        /// Nanoseconds to wait for the peer's close frame after the hub sent one.
        public var closeTimeout: Int64

        public init(maxFrameSize: Int, maxMessageSize: Int, pingInterval: Int64, pongTimeout: Int64, closeTimeout: Int64) {
            self.maxFrameSize = maxFrameSize
            self.maxMessageSize = maxMessageSize
            self.pingInterval = pingInterval
            self.pongTimeout = pongTimeout
            self.closeTimeout = closeTimeout
        }
    }

    public enum Action: Equatable, Sendable {
        /// A text or binary message for the application.
        case deliver(WebSocketMessage)
        /// Frame bytes to write.
        case write(ByteBuffer)
        /// A close frame to write; nothing may be written after it (§5.5.1).
        case writeClose(ByteBuffer)
        /// Close the TCP connection (after the writes before it are flushed).
        case closeTCP
    }

    public enum State: Equatable, Sendable {
        case open
        /// The hub sent a close frame and waits for the peer's until the deadline.
        case closeSent(deadline: Int64)
        case closed
    }

    public private(set) var state: State = .open
    /// The close code the hub sent or echoed, for logs and tests.
    public private(set) var sentCloseCode: CloseCode?
    public let configuration: Configuration
    public let deflate: PerMessageDeflate?
    private var reader: WebSocketReader
    private var lastPingSent: Int64?
    private var lastHeard: Int64

    /// How much earlier than a whole interval the first ping comes (connections opened together then do not all
    /// ping in the same tick); also when the application's own first heartbeat is due.
    public let firstPingEarly: Int64

    public init(configuration: Configuration, deflate: PerMessageDeflate?, now: Int64, firstPingEarly: Int64 = 0) {
        self.configuration = configuration
        self.deflate = deflate
        self.reader = WebSocketReader(maxFrameSize: configuration.maxFrameSize,
            maxMessageSize: configuration.maxMessageSize, expectMasked: true, deflate: deflate != nil)
        self.firstPingEarly = firstPingEarly
        // As if the peer had last been heard that much before it connected.
        self.lastHeard = now - firstPingEarly
    }

    /// Bytes buffered for an incomplete message.
    public var bufferedMessageBytes: Int { reader.assembler.bufferedBytes }

    /// Consumes bytes from the peer and appends what to do about them.
    public mutating func receive(_ buffer: inout ByteBuffer, now: Int64, actions: inout [Action]) {
        lastHeard = now
        while true {
            guard state != .closed else {
                buffer.moveReaderIndex(to: buffer.writerIndex)
                return
            }
            let message: WebSocketMessage?
            do {
                message = try reader.next(&buffer)
            } catch {
                fail(error, actions: &actions)
                return
            }
            guard let message else { return }
            handle(message, now: now, actions: &actions)
        }
    }

    private mutating func handle(_ message: WebSocketMessage, now: Int64, actions: inout [Action]) {
        switch message {
        case .text, .binary:
            // §7.1.4: after sending a close, further data is discarded.
            if state == .open { actions.append(.deliver(message)) }
        case .ping(let payload):
            // §5.5.2/§5.5.3: answer with a pong carrying the same payload (not once closing).
            if state == .open { actions.append(.write(FrameEncoder.frame(opcode: .pong, payload: payload))) }
        case .pong:
            lastPingSent = nil
        case .close(let code, _):
            if state == .open {
                // §5.5.1: echo the status code received; an empty close gets an empty close.
                sentCloseCode = code
                actions.append(.writeClose(FrameEncoder.closeFrame(code: code)))
            }
            // §7.1.1: the server closes the TCP connection first.
            state = .closed
            actions.append(.closeTCP)
        }
    }

    /// Fails the connection (§7.1.7): a close frame with the error's code and reason, then TCP is closed.
    private mutating func fail(_ error: ProtocolError, actions: inout [Action]) {
        if state == .open {
            sentCloseCode = error.closeCode
            actions.append(.writeClose(FrameEncoder.closeFrame(code: error.closeCode, reason: error.message)))
        }
        state = .closed
        actions.append(.closeTCP)
    }

    /// Starts a close handshake from the hub's side (shutdown, slow consumer, connection age).
    public mutating func close(code: CloseCode, reason: String, now: Int64, actions: inout [Action]) {
        guard state == .open else { return }
        sentCloseCode = code
        actions.append(.writeClose(FrameEncoder.closeFrame(code: code, reason: reason)))
        state = .closeSent(deadline: now + configuration.closeTimeout)
    }

    /// Drops the connection at once after telling the peer why (a close frame the peer may never read).
    public mutating func abort(code: CloseCode, reason: String, actions: inout [Action]) {
        guard state != .closed else { return }
        if state == .open {
            sentCloseCode = code
            actions.append(.writeClose(FrameEncoder.closeFrame(code: code, reason: reason)))
        }
        state = .closed
        actions.append(.closeTCP)
    }

    /// Called by the timer: sends pings, drops a peer that did not answer, ends a close handshake that timed out.
    /// - Returns: when the next tick is needed (absolute nanoseconds), or nil when none is.
    public mutating func tick(now: Int64, actions: inout [Action]) -> Int64? {
        switch state {
        case .closed:
            return nil
        case .closeSent(let deadline):
            if now >= deadline {
                state = .closed
                actions.append(.closeTCP)
                return nil
            }
            return deadline
        case .open:
            guard configuration.pingInterval > 0 else { return nil }
            if let sent = lastPingSent {
                if now - sent >= configuration.pongTimeout {
                    abort(code: .goingAway, reason: "no pong within \(configuration.pongTimeout / 1_000_000) ms", actions: &actions)
                    return nil
                }
                return sent + configuration.pongTimeout
            }
            // Only ping a peer that has been quiet for a whole interval.
            if now - lastHeard >= configuration.pingInterval {
                lastPingSent = now
                actions.append(.write(Self.pingFrame))
                return now + configuration.pongTimeout
            }
            return lastHeard + configuration.pingInterval
        }
    }

    private static let pingFrame = FrameEncoder.frame(opcode: .ping, payload: ByteBuffer())
}
