import HubProtocol
import NIOCore

/// `/ws/echo`: sends every message back as it came (text as text, binary as binary). For conformance testing
/// only; the route exists only when the server is started with `--echo`.
final class EchoApplication: WebSocketApplication {
    func didOpen(_ socket: WebSocketHandler) {}

    func didReceive(_ message: WebSocketMessage, from socket: WebSocketHandler) {
        switch message {
        case .text(let payload): socket.send(.text, payload)
        case .binary(let payload): socket.send(.binary, payload)
        default: break
        }
    }

    func didClose(_ socket: WebSocketHandler) {}

    func drain(_ socket: WebSocketHandler) {
        socket.close(code: .goingAway, reason: "hub shutting down")
    }

    /// The echo route keeps reading: a peer over its budget is closed, and data after the close is discarded.
    var holdsReadsWhenUnwritable: Bool { false }

    /// Echo replies are not paced: a peer that sends faster than it reads is closed at its budget.
    func writabilityChanged(_ socket: WebSocketHandler, writable: Bool) {
        if !writable { socket.closeSlowConsumer() }
    }
}
