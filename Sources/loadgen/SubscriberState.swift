import NIOCore

/// One subscriber as the benchmark sees it, across its connections: with `--reconnect` a connection the server
/// closes is replaced by one that resumes where it stopped, and order and duplicates are checked across both.
/// Confined to the process's event loop (and, with `--direct`, to the direct reader's thread under its lock).
final class SubscriberState: @unchecked Sendable {
    let index: Int
    let channelIndex: Int
    /// The connection in use (nil between a close and the next connection).
    var channel: Channel?
    /// The handler of that connection.
    var handler: SubscriberHandler?
    /// Whether the first connection became ready (subscribed, or the SSE stream started).
    var opened = false
    /// Heartbeats of any kind received (pings, heartbeat messages, SSE comments), over every connection.
    var heartbeats = 0
    /// The server's seq of the last event received (hub only): the `since` / `Last-Event-ID` of a reconnection.
    /// Until an event arrives, the head seq that `subscribed` reported.
    var resumeSeq: UInt64?
    // Order and duplicate tracking of the markers of the current epoch.
    var epoch: UInt32 = 0
    var maxSeq: UInt32 = 0
    var seen: [UInt64] = []

    init(index: Int, channelIndex: Int) {
        self.index = index
        self.channelIndex = channelIndex
    }

    /// Whether the direct reader still reads the connection, once it took it over (NIO's channel is then closed);
    /// nil while NIO reads it. Under the reader's lock.
    var directOpen: Bool?

    var isOpen: Bool { directOpen ?? channel?.isActive ?? false }

    /// Records a marker of the current epoch: counts it, or counts it as a duplicate or out of order.
    /// `arrival`: the kernel's receive timestamp of the read that completed the message, or 0 if there is none.
    func record(_ m: Marker, stats: SubscriberStats, now: UInt64, arrival: UInt64) {
        guard m.epoch == stats.epoch else {
            stats.otherEpoch += 1
            return
        }
        if epoch != m.epoch {
            epoch = m.epoch
            maxSeq = 0
            seen.removeAll(keepingCapacity: true)
        }
        stats.received += 1
        let seq = Int(m.seq)
        let word = seq >> 6
        if word >= seen.count { seen.append(contentsOf: repeatElement(0, count: word - seen.count + 1)) }
        let bit = UInt64(1) << UInt64(seq & 63)
        if seen[word] & bit != 0 {
            stats.duplicates += 1
            return
        }
        seen[word] |= bit
        stats.distinct[channelIndex] += 1
        if m.seq < maxSeq { stats.outOfOrder += 1 } else { maxSeq = m.seq }
        // Microseconds from the marker's due time to `time`, within the histograms' range.
        let micros = { (time: UInt64) in min(time > m.nanoseconds ? (time - m.nanoseconds) / 1000 : 0, 120_000_000) }
        _ = stats.histogram.record(micros(now))
        if arrival != 0 { _ = stats.arrivalHistogram.record(micros(arrival)) }
    }
}
