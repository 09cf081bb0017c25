#if canImport(Glibc)
import ArgumentParser
import CNIOLinux
import Glibc
import HubNative

/// `loadgen floor`: the least a fan-out server on one thread must do, as a server the benchmarks can measure beside
/// the hub and Nchan. It speaks Nchan's routes (`GET /sub/{channel}` as WebSocket or EventSource, `POST
/// /pub/{channel}`), so the same load generator drives it, and it does nothing but the system calls: one epoll set,
/// one `read(2)` per ready connection per round, and at the end of each round one `write(2)` per connection with
/// something to send, carrying everything the round gave it (every frame of every publish read in that round). No
/// history, no authorisation, no JSON, no heartbeats, no limits.
///
/// What it is for: its latency and CPU per delivery on a workload are what this host allows any server on one core;
/// a target it cannot meet is bounded by the host (the kernel's cost of a loopback write), not by a server's code.
struct Floor: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: """
        A minimal fan-out server on Nchan's routes (WebSocket and EventSource subscribers, HTTP publishes): one read \
        per ready connection and one write per connection with frames, per round of its epoll loop. Runs until killed.
        """)

    @Option var host = "127.0.0.1"
    @Option var port: Int

    func run() throws {
        try FloorServer(host: host, port: port).run()
    }
}

final class FloorServer {
    private final class Connection {
        let fd: Int32
        var input: [UInt8] = []
        var output: [UInt8] = []
        /// The channel it subscribes to, once it is a subscriber.
        var channel = -1
        var eventSource = false
        var dirty = false
        init(fd: Int32) { self.fd = fd }
    }

    private let listener: Int32
    private let epoll: Int32
    private var connections: [Connection?] = []
    private var freeSlots: [Int] = []
    private var channelIndex: [String: Int] = [:]
    private var subscribers: [[Int]] = []
    private var dirty: [Int] = []

    private static let listenerTag = UInt64.max
    private static let answer = Array("HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n".utf8)

    init(host: String, port: Int) throws {
        listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard listener >= 0 else { throw FloorError("socket: errno \(errno)") }
        var one: Int32 = 1
        setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        guard inet_pton(AF_INET, host, &address.sin_addr) == 1 else { throw FloorError("not an IPv4 address: \(host)") }
        let fd = listener
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(fd, 4096) == 0 else { throw FloorError("bind/listen \(host):\(port): errno \(errno)") }
        epoll = epoll_create1(Int32(EPOLL_CLOEXEC))
        guard epoll >= 0 else { throw FloorError("epoll_create1: errno \(errno)") }
        var event = epoll_event()
        event.events = EPOLLIN.rawValue
        event.data.u64 = Self.listenerTag
        guard epoll_ctl(epoll, EPOLL_CTL_ADD, listener, &event) == 0 else { throw FloorError("epoll_ctl: errno \(errno)") }
    }

    func run() throws {
        // A subscriber gone between two rounds is found by its write failing, not by a signal.
        signal(SIGPIPE, SIG_IGN)
        try withEpollBuffers { events, capacity, storage in try loop(events: events, capacity: capacity, storage: storage) }
    }

    private func loop(events: UnsafeMutablePointer<epoll_event>, capacity: Int32,
        storage: UnsafeMutableRawBufferPointer) throws
    {
        while true {
            // A connection the kernel did not take everything from is tried again after a millisecond.
            let ready = epoll_wait(epoll, events, capacity, dirty.isEmpty ? -1 : 1)
            if ready < 0 && errno != EINTR { throw FloorError("epoll_wait: errno \(errno)") }
            for i in 0..<max(Int(ready), 0) {
                let tag = events[i].data.u64
                if tag == Self.listenerTag { accept(); continue }
                read(slot: Int(tag), storage: storage)
            }
            flush()
        }
    }

    private func accept() {
        while true {
            let fd = CNIOLinux_accept4(listener, nil, nil, Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue))
            guard fd >= 0 else { return }
            var one: Int32 = 1
            setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            let slot: Int
            if let free = freeSlots.popLast() {
                slot = free
                connections[slot] = Connection(fd: fd)
            } else {
                slot = connections.count
                connections.append(Connection(fd: fd))
            }
            var event = epoll_event()
            event.events = EPOLLIN.rawValue
            event.data.u64 = UInt64(slot)
            if epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &event) != 0 { drop(slot) }
        }
    }

    private func read(slot: Int, storage: UnsafeMutableRawBufferPointer) {
        guard let connection = connections[slot] else { return }
        let n = Glibc.read(connection.fd, storage.baseAddress, storage.count)
        if n < 0 && (errno == EAGAIN || errno == EINTR) { return }
        guard n > 0 else { return drop(slot) }
        // A subscriber's own frames (pongs, a close) are not looked at: the floor never pings.
        guard connection.channel < 0 else { return }
        connection.input.append(contentsOf: UnsafeRawBufferPointer(rebasing: storage[0..<n]))
        requests(of: connection, slot: slot)
    }

    /// Handles every whole request at the start of the connection's input.
    private func requests(of connection: Connection, slot: Int) {
        var at = 0
        let input = connection.input
        while let headEnd = Self.end(of: [13, 10, 13, 10], in: input, from: at) {
            let head = String(decoding: input[at..<headEnd], as: UTF8.self)
            let line = head.prefix { $0 != "\r" }.split(separator: " ")
            guard line.count >= 2 else { return drop(slot) }
            let path = line[1]
            if line[0] == "GET", path.hasPrefix("/sub/") {
                subscribe(connection, slot: slot, channel: String(path.dropFirst(5)), head: head)
                at = headEnd
                break
            }
            guard line[0] == "POST", path.hasPrefix("/pub/") else { return drop(slot) }
            var length = 0
            for field in head.split(separator: "\r\n") where field.lowercased().hasPrefix("content-length:") {
                length = Int(String(field.dropFirst(15).filter { $0 != " " })) ?? 0
            }
            guard input.count - headEnd >= length else { break }
            publish(channel: String(path.dropFirst(5)), body: input[headEnd..<(headEnd + length)])
            connection.output.append(contentsOf: Self.answer)
            markDirty(connection, slot: slot)
            at = headEnd + length
        }
        connection.input.removeFirst(at)
    }

    private func subscribe(_ connection: Connection, slot: Int, channel name: String, head: String) {
        let channel = channelIndex[name] ?? {
            subscribers.append([])
            channelIndex[name] = subscribers.count - 1
            return subscribers.count - 1
        }()
        connection.channel = channel
        subscribers[channel].append(slot)
        let lower = head.lowercased()
        if lower.contains("upgrade: websocket") {
            var key = ""
            for field in head.split(separator: "\r\n") where field.lowercased().hasPrefix("sec-websocket-key:") {
                key = String(field.dropFirst(18).filter { $0 != " " })
            }
            let accept = Base64.encode(Digest.sha1(Array((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").utf8)))
            connection.output.append(contentsOf: Array(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                + "Connection: Upgrade\r\nSec-WebSocket-Accept: \(accept)\r\n\r\n").utf8))
        } else {
            connection.eventSource = true
            connection.output.append(contentsOf: Array(("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                + "Cache-Control: no-cache\r\nConnection: keep-alive\r\n\r\n").utf8))
        }
        markDirty(connection, slot: slot)
    }

    /// Frames the message once per transport and appends it to each subscriber's output.
    private func publish(channel name: String, body: ArraySlice<UInt8>) {
        guard let channel = channelIndex[name] else { return }
        var frame: [UInt8] = [0x81]
        if body.count < 126 {
            frame.append(UInt8(body.count))
        } else if body.count < 65536 {
            frame.append(126)
            frame.append(UInt8(body.count >> 8))
            frame.append(UInt8(body.count & 0xFF))
        } else {
            frame.append(127)
            for shift in stride(from: 56, through: 0, by: -8) { frame.append(UInt8((body.count >> shift) & 0xFF)) }
        }
        frame.append(contentsOf: body)
        let event = Array("data: ".utf8) + body + [10, 10]
        for slot in subscribers[channel] {
            guard let connection = connections[slot] else { continue }
            connection.output.append(contentsOf: connection.eventSource ? event : frame)
            markDirty(connection, slot: slot)
        }
    }

    private func markDirty(_ connection: Connection, slot: Int) {
        guard !connection.dirty else { return }
        connection.dirty = true
        dirty.append(slot)
    }

    /// One write per connection with output; what the kernel does not take waits for the next round.
    private func flush() {
        let slots = dirty
        dirty.removeAll(keepingCapacity: true)
        for slot in slots {
            guard let connection = connections[slot] else { continue }
            connection.dirty = false
            let n = connection.output.withUnsafeBytes { write(connection.fd, $0.baseAddress, $0.count) }
            if n == connection.output.count {
                connection.output.removeAll(keepingCapacity: true)
            } else if n > 0 {
                connection.output.removeFirst(n)
                markDirty(connection, slot: slot)
            } else if errno == EAGAIN || errno == EINTR {
                markDirty(connection, slot: slot)
            } else {
                drop(slot)
            }
        }
    }

    private func drop(_ slot: Int) {
        guard let connection = connections[slot] else { return }
        _ = epoll_ctl(epoll, EPOLL_CTL_DEL, connection.fd, nil)
        close(connection.fd)
        if connection.channel >= 0, let at = subscribers[connection.channel].firstIndex(of: slot) {
            subscribers[connection.channel].swapAt(at, subscribers[connection.channel].count - 1)
            subscribers[connection.channel].removeLast()
        }
        connections[slot] = nil
        freeSlots.append(slot)
    }

    /// The index just past the first `needle` in `bytes` at or after `from`.
    private static func end(of needle: [UInt8], in bytes: [UInt8], from: Int) -> Int? {
        var i = from
        while i + needle.count <= bytes.count {
            if bytes[i] == needle[0] && bytes[(i + 1)..<(i + needle.count)].elementsEqual(needle[1...]) {
                return i + needle.count
            }
            i += 1
        }
        return nil
    }
}

struct FloorError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
#endif
