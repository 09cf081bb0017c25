/// The clock of one long-lived stream, as a pure state machine: heartbeats every `heartbeatInterval` and an end
/// after `maxAge`. Time is passed in (nanoseconds), so both are testable without waiting.
public struct StreamTimer: Sendable {
    public enum Action: Equatable, Sendable {
        case heartbeat
        /// The stream reached its maximum age: tell the client to reconnect and end it.
        case expire
    }

    public let heartbeatInterval: Int64
    public let maxAge: Int64
    private let startedAt: Int64
    private var nextHeartbeat: Int64
    public private(set) var expired = false

    /// - Parameter firstHeartbeatEarly: how much earlier than a whole interval the first heartbeat comes (see
    ///   `heartbeatSpread`).
    public init(now: Int64, heartbeatInterval: Int64, maxAge: Int64, firstHeartbeatEarly: Int64 = 0) {
        self.heartbeatInterval = heartbeatInterval
        self.maxAge = maxAge
        self.startedAt = now
        self.nextHeartbeat = heartbeatInterval > 0 ? now + heartbeatInterval - firstHeartbeatEarly : .max
    }

    /// How much earlier than a whole interval a connection's first heartbeat (and ping) comes: a random part of the
    /// first half of the interval. Connections opened together (a burst of clients, a reconnect storm) then do not
    /// all send their heartbeats in the same loop tick, interval after interval, which stalls every delivery
    /// behind them.
    public static func heartbeatSpread(interval: Int64) -> Int64 {
        interval >= 2 ? Int64.random(in: 0..<(interval / 2)) : 0
    }

    /// What is due at `now`, and the next time to call again (nil once expired).
    public mutating func tick(now: Int64) -> (actions: [Action], next: Int64?) {
        guard !expired else { return ([], nil) }
        if now >= startedAt + maxAge {
            expired = true
            return ([.expire], nil)
        }
        var actions: [Action] = []
        if now >= nextHeartbeat {
            actions.append(.heartbeat)
            // Skip missed beats rather than send a burst after a stall.
            while nextHeartbeat <= now { nextHeartbeat += heartbeatInterval }
        }
        return (actions, min(nextHeartbeat, startedAt + maxAge))
    }
}
