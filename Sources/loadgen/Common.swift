#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore

/// What the load is aimed at: the hub's routes, or Nchan's (`/sub/{channel}`, `/pub/{channel}`).
enum ServerKind: String, CaseIterable, Sendable {
    case hub, nchan
}

enum Transport: String, CaseIterable, Sendable {
    /// WebSocket without permessage-deflate.
    case ws
    /// WebSocket with permessage-deflate offered (hub only).
    case wsDeflate = "ws-deflate"
    case sse
}

/// Unix time in nanoseconds (CLOCK_REALTIME): publisher and subscribers are separate processes on one machine.
@inline(__always)
func wallNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// The marker every published message carries: `~epoch~seq~publishNanoseconds~`. `seq` counts from 1 per channel and
/// epoch; the time is when the message was due by the open-loop schedule (not when it was sent), so a publisher that
/// falls behind shows up as latency instead of hiding it.
struct Marker: Equatable {
    var epoch: UInt32
    var seq: UInt32
    var nanoseconds: UInt64

    func text() -> String { "~\(epoch)~\(seq)~\(nanoseconds)~" }

    /// Finds the first marker in `bytes` (allocates nothing: it runs once per received message).
    static func find(in bytes: UnsafeRawBufferPointer) -> Marker? {
        let tilde = UInt8(ascii: "~")
        var i = 0
        let n = bytes.count
        while i < n {
            guard bytes[i] == tilde else { i += 1; continue }
            var fields: (UInt64, UInt64, UInt64) = (0, 0, 0)
            var count = 0
            var j = i + 1
            var value: UInt64 = 0
            var digits = 0
            while j < n {
                let b = bytes[j]
                if b >= 0x30 && b <= 0x39 {
                    value = value &* 10 &+ UInt64(b - 0x30)
                    digits += 1
                } else if b == tilde && digits > 0 {
                    switch count {
                    case 0: fields.0 = value
                    case 1: fields.1 = value
                    default: fields.2 = value
                    }
                    count += 1
                    value = 0
                    digits = 0
                    if count == 3 { break }
                } else {
                    break
                }
                j += 1
            }
            if count == 3 {
                return Marker(epoch: UInt32(truncatingIfNeeded: fields.0), seq: UInt32(truncatingIfNeeded: fields.1),
                    nanoseconds: fields.2)
            }
            i += 1
        }
        return nil
    }
}

extension UnsafeRawBufferPointer {
    /// The index just past the first occurrence of `needle` (a plain loop: the generic `firstRange(of:)` allocates
    /// and costs several times more, once per received message).
    func end(of needle: [UInt8]) -> Int? {
        guard needle.count <= count, let first = needle.first else { return nil }
        var i = 0
        while i + needle.count <= count {
            if self[i] == first {
                var k = 1
                while k < needle.count && self[i + k] == needle[k] { k += 1 }
                if k == needle.count { return i + k }
            }
            i += 1
        }
        return nil
    }
}

/// A message body of about `size` bytes around the marker: a JSON-like text, as compressible as real event payloads.
func padding(toward size: Int, after used: Int) -> String {
    let pattern = #"{"row":17,"status":"ok","value":"abcdefgh"},"#
    var out = ""
    while used + out.utf8.count + pattern.utf8.count <= size { out += pattern }
    while used + out.utf8.count < size { out += "x" }
    return out
}

func writeLine(_ s: String) {
    var line = s + "\n"
    line.withUTF8 { bytes in _ = write(1, bytes.baseAddress, bytes.count) }
}

/// A failure of a system call or of the load generator's setup, with what failed.
struct LoadGenError: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}
