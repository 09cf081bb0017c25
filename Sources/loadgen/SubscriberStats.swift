import Histogram

/// What every subscriber of the process received and how: message counts of the current epoch (`reset` starts a new
/// one), and connection-lifetime counts (closes with their codes, reconnections, heartbeats) that `reset` keeps.
final class SubscriberStats: @unchecked Sendable {
    var epoch: UInt32 = 0
    var received = 0
    var duplicates = 0
    var outOfOrder = 0
    var otherEpoch = 0
    /// Distinct messages received, per channel (summed over that channel's subscribers).
    var distinct: [Int]
    var connectionsPerChannel: [Int]
    var histogram = Histogram<UInt64>(highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: .three)
    /// With `--direct`: the latency to the kernel's receive timestamp (`SO_TIMESTAMPNS`) of the last segment of the
    /// read that completed the message (`DirectReader`). At most the latency to the read; at least the latency to the
    /// subscriber's socket, since segments waiting in a socket merge and keep the later one's time.
    var arrivalHistogram = Histogram<UInt64>(highestTrackableValue: 120_000_000,
        numberOfSignificantValueDigits: .three)

    // Connection lifetime: not reset with the epoch.
    var closedByServer = 0
    /// How connections ended that the load generator did not close itself: `"1013"` (a WebSocket close frame's code),
    /// `"sse-reconnect:<reason>"` (an SSE `event: reconnect`), `"eof"` (TCP ended with neither), `"error"` (a
    /// socket error such as a reset).
    var closeCodes: [String: Int] = [:]
    /// Connections opened again after a close (with `--reconnect`), and attempts that failed.
    var reconnects = 0
    var reconnectFailures = 0
    /// `replay.truncated` answers (history did not reach back to a resume point).
    var truncated = 0
    /// WebSocket pings received (each answered with a pong at once), `{"type":"heartbeat"}` messages, and SSE
    /// `: heartbeat` comments.
    var pings = 0
    var pongs = 0
    var heartbeatMessages = 0
    var heartbeatComments = 0

    init(channels: Int) {
        distinct = Array(repeating: 0, count: channels)
        connectionsPerChannel = Array(repeating: 0, count: channels)
    }

    func reset(epoch: UInt32) {
        self.epoch = epoch
        received = 0
        duplicates = 0
        outOfOrder = 0
        otherEpoch = 0
        for i in distinct.indices { distinct[i] = 0 }
        histogram.reset()
        arrivalHistogram.reset()
    }

    func closed(_ how: String) {
        closedByServer += 1
        closeCodes[how, default: 0] += 1
    }
}
