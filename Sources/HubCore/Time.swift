/// RFC 3339 timestamps without Foundation.
public enum RFC3339 {
    /// `2026-11-25T12:00:00.123Z` for Unix milliseconds.
    public static func format(unixMilliseconds ms: Int64) -> String {
        // Floored, without overflow at Int64.min: a negative remainder borrows one second.
        let remainder = ms % 1000
        let seconds = ms / 1000 - (remainder < 0 ? 1 : 0)
        let millis = Int(remainder < 0 ? remainder + 1000 : remainder)
        var days = seconds >= 0 ? seconds / 86400 : (seconds - 86399) / 86400
        let secOfDay = Int(seconds - days * 86400)
        // Howard Hinnant's civil_from_days.
        days += 719_468
        let era = (days >= 0 ? days : days - 146_096) / 146_097
        let doe = days - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        var year = yoe + era * 400
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let day = doy - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        if month <= 2 { year += 1 }
        // Written digit by digit (every event that carries no timestamp gets one): 24 bytes for years 0 to 9999, the
        // only ones RFC 3339 has; others with a '-' if negative and more digits if needed.
        let magnitude = Int(year.magnitude)
        var yearWidth = 4
        var beyond = magnitude / 10000
        while beyond > 0 {
            yearWidth += 1
            beyond /= 10
        }
        let lead = (year < 0 ? 1 : 0) + yearWidth
        return String(unsafeUninitializedCapacity: lead + 20) { out in
            func put(_ value: Int, _ width: Int, at end: Int) {
                var v = value
                for index in stride(from: end - 1, through: end - width, by: -1) {
                    out[index] = UInt8(truncatingIfNeeded: 0x30 + v % 10)
                    v /= 10
                }
            }
            if year < 0 { out[0] = UInt8(ascii: "-") }
            put(magnitude, yearWidth, at: lead)
            out[lead] = UInt8(ascii: "-")
            put(Int(month), 2, at: lead + 3)
            out[lead + 3] = UInt8(ascii: "-")
            put(Int(day), 2, at: lead + 6)
            out[lead + 6] = UInt8(ascii: "T")
            put(secOfDay / 3600, 2, at: lead + 9)
            out[lead + 9] = UInt8(ascii: ":")
            put(secOfDay / 60 % 60, 2, at: lead + 12)
            out[lead + 12] = UInt8(ascii: ":")
            put(secOfDay % 60, 2, at: lead + 15)
            out[lead + 15] = UInt8(ascii: ".")
            put(millis, 3, at: lead + 19)
            out[lead + 19] = UInt8(ascii: "Z")
            return lead + 20
        }
    }

    static func daysIn(month: Int, year: Int) -> Int {
        switch month {
        case 2: return year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }

    /// Whether `text` is an RFC 3339 date-time (`YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`).
    public static func isValid(_ text: String) -> Bool {
        let b = Array(text.utf8)
        func digits(_ from: Int, _ count: Int) -> Int? {
            guard from + count <= b.count else { return nil }
            var v = 0
            for i in from..<from + count {
                guard (48...57).contains(b[i]) else { return nil }
                v = v * 10 + Int(b[i] - 48)
            }
            return v
        }
        guard b.count >= 20, let year = digits(0, 4), b[4] == 0x2D, let month = digits(5, 2), b[7] == 0x2D,
            let day = digits(8, 2), b[10] == UInt8(ascii: "T") || b[10] == UInt8(ascii: "t"), let hour = digits(11, 2),
            b[13] == 0x3A, let minute = digits(14, 2), b[16] == 0x3A, let second = digits(17, 2)
        else { return false }
        // RFC 3339 §5.7: the day must exist in its month and year. Leap seconds (60) are refused: watchers'
        // JavaScript Date cannot parse them, and JSON Schema validators disagree on where they may stand.
        guard (1...12).contains(month), (1...daysIn(month: month, year: year)).contains(day), hour < 24, minute < 60,
            second < 60
        else { return false }
        var i = 19
        if i < b.count, b[i] == UInt8(ascii: ".") {
            i += 1
            let start = i
            while i < b.count, (48...57).contains(b[i]) { i += 1 }
            guard i > start else { return false }
        }
        guard i < b.count else { return false }
        if b[i] == UInt8(ascii: "Z") || b[i] == UInt8(ascii: "z") { return i + 1 == b.count }
        guard b[i] == UInt8(ascii: "+") || b[i] == UInt8(ascii: "-"), let oh = digits(i + 1, 2), i + 3 < b.count,
            b[i + 3] == 0x3A, let om = digits(i + 4, 2), oh < 24, om < 60
        else { return false }
        return i + 6 == b.count
    }
}
