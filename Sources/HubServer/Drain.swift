import NIOConcurrencyHelpers
import NIOCore

/// Sent through every open connection's pipeline when the hub starts draining: each handler ends its connection in
/// the way its client understands (WebSocket close 1012, a final SSE `reconnect` event, or `Connection: close`).
struct DrainEvent: Sendable {}

/// What every connection may need to know about the server as a whole.
final class ServerState: Sendable {
    private let draining = NIOLockedValueBox(false)

    /// True once SIGTERM (or `HubServer.drain`) began the drain: new streams are refused, responses close.
    var isDraining: Bool { draining.withLockedValue { $0 } }

    /// Marks the server as draining; false if it already was.
    func startDraining() -> Bool {
        draining.withLockedValue { was in
            defer { was = true }
            return !was
        }
    }
}

/// Every open connection of the server, so that a drain reaches each one and learns when the last one is gone, and
/// how many each client address holds (for `maxConnectionsPerAddress`).
final class ConnectionTable: Sendable {
    private struct State {
        var channels: [ObjectIdentifier: Channel] = [:]
        var perAddress: [String: Int] = [:]
        var whenEmpty: [EventLoopPromise<Void>] = []
    }
    private let state = NIOLockedValueBox(State())
    /// Connections one address may hold (0: no limit).
    private let perAddressLimit: Int

    init(perAddressLimit: Int = 0) {
        self.perAddressLimit = perAddressLimit
    }

    /// Tracks `channel` until it closes. False, and not tracked, when its address already holds the limit.
    func add(_ channel: Channel) -> Bool {
        let id = ObjectIdentifier(channel)
        let address = perAddressLimit > 0 ? channel.remoteAddress?.ipAddress : nil
        let admitted = state.withLockedValue { state -> Bool in
            if let address {
                let held = state.perAddress[address, default: 0]
                guard held < perAddressLimit else { return false }
                state.perAddress[address] = held + 1
            }
            state.channels[id] = channel
            return true
        }
        guard admitted else { return false }
        channel.closeFuture.whenComplete { [self] _ in
            let waiters = state.withLockedValue { state -> [EventLoopPromise<Void>] in
                state.channels[id] = nil
                if let address {
                    let held = state.perAddress[address, default: 1] - 1
                    state.perAddress[address] = held > 0 ? held : nil
                }
                guard state.channels.isEmpty else { return [] }
                defer { state.whenEmpty = [] }
                return state.whenEmpty
            }
            waiters.forEach { $0.succeed() }
        }
        return true
    }

    var all: [Channel] { state.withLockedValue { Array($0.channels.values) } }

    /// Completes once no connection is open.
    func whenEmpty(on loop: EventLoop) -> EventLoopFuture<Void> {
        let promise = loop.makePromise(of: Void.self)
        let empty = state.withLockedValue { state -> Bool in
            if state.channels.isEmpty { return true }
            state.whenEmpty.append(promise)
            return false
        }
        if empty { promise.succeed() }
        return promise.futureResult
    }
}

/// How a drain went.
public struct DrainResult: Sendable, Equatable {
    /// Connections open when the drain began.
    public var connections: Int
    /// Connections still open at the deadline, closed without ceremony.
    public var forced: Int
}
