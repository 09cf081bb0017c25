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

    public init(now: Int64, heartbeatInterval: Int64, maxAge: Int64) {
        self.heartbeatInterval = heartbeatInterval
        self.maxAge = maxAge
        self.startedAt = now
        self.nextHeartbeat = heartbeatInterval > 0 ? now + heartbeatInterval : .max
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
