import HubCore

/// Events waiting for a connection that cannot take more right now (its channel is over the write-buffer water
/// mark). Entries are references to shared `EncodedEvent`s, so waiting costs a pointer, not a copy.
///
/// Replay entries (read from history at the reader's own pace) and live entries are told apart: only live bytes
/// count against the slow-consumer budget, so a watcher that catches up on a long history is not mistaken for a
/// slow one, while one that cannot keep up with live traffic is.
struct OutboundBacklog {
    /// However they are counted, more entries than this make the connection a slow consumer.
    static let maxEntries = 10_000

    private var items: [(event: EncodedEvent, subscription: Subscription, live: Bool, bytes: Int)] = []
    private var head = 0
    private(set) var liveBytes = 0

    var isEmpty: Bool { head == items.count }
    var count: Int { items.count - head }

    mutating func append(_ event: EncodedEvent, subscription: Subscription, live: Bool, bytes: Int) {
        items.append((event, subscription, live, bytes))
        if live { liveBytes += bytes }
    }

    /// The oldest entry whose subscription is still active (entries of ended subscriptions are dropped).
    mutating func popFirst() -> (event: EncodedEvent, subscription: Subscription)? {
        while head < items.count {
            let item = items[head]
            head += 1
            if item.live { liveBytes -= item.bytes }
            if head > 1024 && head * 2 > items.count {
                items.removeFirst(head)
                head = 0
            }
            if item.subscription.active { return (item.event, item.subscription) }
        }
        return nil
    }

    /// Drops the waiting entries of an ended subscription.
    mutating func remove(_ subscription: Subscription) {
        var kept = items[head...].filter { $0.subscription !== subscription }
        kept.reserveCapacity(kept.count)
        items = Array(kept)
        head = 0
        liveBytes = items.reduce(0) { $0 + ($1.live ? $1.bytes : 0) }
    }

    mutating func removeAll() {
        items.removeAll()
        head = 0
        liveBytes = 0
    }
}
