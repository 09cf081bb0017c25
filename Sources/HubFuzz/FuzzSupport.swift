/// Reads the fuzzer's bytes front to back: a few leading bytes choose a configuration, the rest is the input.
/// Missing bytes read as zero, so every input, the empty one included, is a valid case.
struct FuzzInput {
    let bytes: [UInt8]
    private(set) var index = 0

    init(_ bytes: [UInt8]) {
        self.bytes = bytes
    }

    mutating func byte() -> UInt8 {
        guard index < bytes.count else { return 0 }
        defer { index += 1 }
        return bytes[index]
    }

    /// Everything not yet read.
    var rest: ArraySlice<UInt8> { bytes[min(index, bytes.count)...] }
}

/// Stops the process when an invariant does not hold: libFuzzer records the input as a crash, and the runner
/// names the broken invariant.
func require(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String,
    file: StaticString = #fileID, line: UInt = #line)
{
    if !condition() { fatalError("invariant violated: \(message())", file: file, line: line) }
}

/// A small deterministic generator (SplitMix64), so that an input always means the same chunking.
struct SplitMix64 {
    var state: UInt64

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// How bytes arrive from a socket: one read, one byte per read, or reads of pseudo-random sizes.
enum Chunking {
    /// Consecutive ranges covering `0..<count` (at least one range, so that an empty input is still delivered once).
    /// Seed 0 gives one chunk, seed 1 single bytes, other seeds sizes of 1 up to a bound that grows with the seed.
    static func ranges(count: Int, seed: UInt8) -> [Range<Int>] {
        if count == 0 || seed == 0 { return [0..<count] }
        if seed == 1 { return (0..<count).map { $0..<($0 + 1) } }
        var rng = SplitMix64(state: UInt64(seed))
        let bound = UInt64(seed) * UInt64(seed) / 4 + 2
        var ranges: [Range<Int>] = []
        var start = 0
        while start < count {
            let n = min(count - start, 1 + Int(rng.next() % bound))
            ranges.append(start..<(start + n))
            start += n
        }
        return ranges
    }
}

/// RFC 7230 §3.2.6 tchar, written out here rather than taken from the code under test.
func isTokenChar(_ b: UInt8) -> Bool {
    switch b {
    case 0x30...0x39, 0x41...0x5A, 0x61...0x7A: return true
    case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"),
        UInt8(ascii: "'"), UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."),
        UInt8(ascii: "^"), UInt8(ascii: "_"), UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
        return true
    default: return false
    }
}

func isToken(_ s: String) -> Bool { !s.utf8.isEmpty && s.utf8.allSatisfy(isTokenChar) }

/// Whether `bytes` is valid UTF-8, by the standard library's decoder (independent of the hub's validator).
func isValidUTF8<Bytes: Sequence<UInt8>>(_ bytes: Bytes) -> Bool {
    String(validating: bytes, as: UTF8.self) != nil
}
