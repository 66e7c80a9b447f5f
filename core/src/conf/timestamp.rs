//! `log_timestamp_format`: the strftime(3) format of the timestamp that
//! starts each log line, checked when the configuration is read and
//! rendered from a broken-down local time the runtime supplies.
//!
//! The conversions are those of the C locale (English names, `%c` as
//! `%a %b %e %H:%M:%S %Y`), which is what Mosquitto prints under the
//! service's usual `LANG=C`. A conversion outside [`TimestampFormat::parse`]'s
//! list, a flag or width (`%-d`, `%5Y`) or a modifier (`%Ey`, `%Od`) is
//! refused rather than printed as something else.

use std::fmt::Write as _;

/// One calendar instant in local time, as localtime(3) gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalTime {
    /// Seconds since the Unix epoch (`%s`).
    pub unix: i64,
    /// The year, e.g. 2024.
    pub year: i32,
    /// 1 to 12.
    pub month: u8,
    /// Day of the month, 1 to 31.
    pub day: u8,
    /// 0 to 23.
    pub hour: u8,
    /// 0 to 59.
    pub minute: u8,
    /// 0 to 60 (a leap second).
    pub second: u8,
    /// Days since Sunday, 0 to 6.
    pub week_day: u8,
    /// Days since January 1, 0 to 365.
    pub year_day: u16,
    /// Offset from UTC in seconds, east positive (`%z`).
    pub utc_offset: i32,
    /// The zone's abbreviation, e.g. `CET` (`%Z`).
    pub zone: String,
}

/// One piece of a parsed format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece {
    /// Text copied as written (a byte range of the format).
    Text(usize, usize),
    /// A conversion, by its letter (`%%` is `'%'`).
    Conversion(char),
}

/// The conversions understood: every one of POSIX strftime(3) but the
/// ISO 8601 week-based ones (`%G`, `%g`, `%V`), plus glibc's `%k`, `%l`
/// and `%s`.
const CONVERSIONS: &str = "aAbBcCdDeFHhIjklmMnprRsStTuUwWxXyYzZ%";

/// A checked `log_timestamp_format`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimestampFormat {
    format: String,
    pieces: Vec<Piece>,
}

impl TimestampFormat {
    /// Checks `format`; the error names the first conversion that is not
    /// understood.
    pub fn parse(format: &str) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut text_start = 0;
        let mut chars = format.char_indices();
        while let Some((at, c)) = chars.next() {
            if c != '%' {
                continue;
            }
            if text_start < at {
                pieces.push(Piece::Text(text_start, at));
            }
            let Some((next_at, letter)) = chars.next() else {
                return Err("the format ends with a lone %".to_owned());
            };
            if !CONVERSIONS.contains(letter) {
                return Err(format!("unknown conversion %{letter}"));
            }
            pieces.push(Piece::Conversion(letter));
            text_start = next_at + letter.len_utf8();
        }
        if text_start < format.len() {
            pieces.push(Piece::Text(text_start, format.len()));
        }
        Ok(Self { format: format.to_owned(), pieces })
    }

    /// The time of a syslog header, `%b %e %T` (glibc's syslog(3) writes
    /// `Mar  5 07:08:09`).
    pub fn syslog_header() -> Self {
        let pieces = vec![
            Piece::Conversion('b'),
            Piece::Text(2, 3),
            Piece::Conversion('e'),
            Piece::Text(5, 6),
            Piece::Conversion('T'),
        ];
        Self { format: "%b %e %T".to_owned(), pieces }
    }

    /// The format as written.
    pub fn as_str(&self) -> &str {
        &self.format
    }

    /// Appends `time` in this format to `out`.
    pub fn render(&self, time: &LocalTime, out: &mut String) {
        for piece in &self.pieces {
            match *piece {
                Piece::Text(from, to) => out.push_str(self.format.get(from..to).unwrap_or_default()),
                Piece::Conversion(letter) => convert(letter, time, out),
            }
        }
    }
}

const DAYS: [&str; 7] = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// Writes one conversion. Writing to a `String` cannot fail.
fn convert(letter: char, t: &LocalTime, out: &mut String) {
    let day_name = DAYS.get(usize::from(t.week_day)).copied().unwrap_or("?");
    let month_name = MONTHS.get(usize::from(t.month).wrapping_sub(1)).copied().unwrap_or("?");
    let hour12 = match t.hour % 12 {
        0 => 12,
        h => h,
    };
    let _ = match letter {
        'a' => write!(out, "{}", &day_name[..3]),
        'A' => write!(out, "{day_name}"),
        'b' | 'h' => write!(out, "{}", &month_name[..3]),
        'B' => write!(out, "{month_name}"),
        'c' => {
            for letter in ['a', ' ', 'b', ' ', 'e', ' ', 'T', ' ', 'Y'] {
                if letter == ' ' {
                    out.push(' ');
                } else {
                    convert(letter, t, out);
                }
            }
            Ok(())
        }
        'C' => write!(out, "{:02}", t.year.div_euclid(100)),
        'd' => write!(out, "{:02}", t.day),
        'D' | 'x' => write!(out, "{:02}/{:02}/{:02}", t.month, t.day, t.year.rem_euclid(100)),
        'e' => write!(out, "{:2}", t.day),
        'F' => write!(out, "{}-{:02}-{:02}", t.year, t.month, t.day),
        'H' => write!(out, "{:02}", t.hour),
        'I' => write!(out, "{hour12:02}"),
        'j' => write!(out, "{:03}", u32::from(t.year_day) + 1),
        'k' => write!(out, "{:2}", t.hour),
        'l' => write!(out, "{hour12:2}"),
        'm' => write!(out, "{:02}", t.month),
        'M' => write!(out, "{:02}", t.minute),
        'n' => {
            out.push('\n');
            Ok(())
        }
        'p' => write!(out, "{}", if t.hour < 12 { "AM" } else { "PM" }),
        'r' => write!(out, "{hour12:02}:{:02}:{:02} {}", t.minute, t.second, if t.hour < 12 { "AM" } else { "PM" }),
        'R' => write!(out, "{:02}:{:02}", t.hour, t.minute),
        's' => write!(out, "{}", t.unix),
        'S' => write!(out, "{:02}", t.second),
        't' => {
            out.push('\t');
            Ok(())
        }
        'T' | 'X' => write!(out, "{:02}:{:02}:{:02}", t.hour, t.minute, t.second),
        'u' => write!(out, "{}", if t.week_day == 0 { 7 } else { t.week_day }),
        // Weeks starting on Sunday (%U) or Monday (%W); days before the
        // first of them are in week 0.
        'U' => write!(out, "{:02}", (u32::from(t.year_day) + 7 - u32::from(t.week_day)) / 7),
        'W' => write!(out, "{:02}", (u32::from(t.year_day) + 7 - (u32::from(t.week_day) + 6) % 7) / 7),
        'w' => write!(out, "{}", t.week_day),
        'y' => write!(out, "{:02}", t.year.rem_euclid(100)),
        'Y' => write!(out, "{}", t.year),
        'z' => {
            let sign = if t.utc_offset < 0 { '-' } else { '+' };
            let minutes = t.utc_offset.unsigned_abs() / 60;
            write!(out, "{sign}{:02}{:02}", minutes / 60, minutes % 60)
        }
        'Z' => write!(out, "{}", t.zone),
        _ => write!(out, "%"),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Thursday 2024-02-29 09:05:07 in Central European Time
    /// (1709193907 s since the epoch).
    fn leap_day() -> LocalTime {
        LocalTime {
            unix: 1_709_193_907,
            year: 2024,
            month: 2,
            day: 29,
            hour: 9,
            minute: 5,
            second: 7,
            week_day: 4,
            year_day: 59,
            utc_offset: 3600,
            zone: "CET".to_owned(),
        }
    }

    fn render(format: &str, time: &LocalTime) -> String {
        let mut out = String::new();
        match TimestampFormat::parse(format) {
            Ok(parsed) => parsed.render(time, &mut out),
            Err(e) => panic!("{format}: {e}"),
        }
        out
    }

    #[test]
    fn the_common_conversions_print_as_strftime_in_the_c_locale() {
        let t = leap_day();
        let cases = [
            ("%Y-%m-%dT%H:%M:%S", "2024-02-29T09:05:07"),
            ("%s", "1709193907"),
            ("%y %b %a %j", "24 Feb Thu 060"),
            ("%e|%T|%F", "29|09:05:07|2024-02-29"),
            ("%z %Z %%", "+0100 CET %"),
            ("%A %B %h %C", "Thursday February Feb 20"),
            ("%c", "Thu Feb 29 09:05:07 2024"),
            ("%D %x %X %R", "02/29/24 02/29/24 09:05:07 09:05"),
            ("%I %l %k %p %r", "09  9  9 AM 09:05:07 AM"),
            ("%u %w %U %W", "4 4 08 09"),
            ("[%n%t]", "[\n\t]"),
            ("plain text, ünïcode", "plain text, ünïcode"),
        ];
        for (format, expected) in cases {
            assert_eq!(render(format, &t), expected, "{format}");
        }
    }

    #[test]
    fn edge_values_pad_and_sign_as_glibc() {
        let t = LocalTime {
            unix: 0,
            year: 2001,
            month: 1,
            day: 7,
            hour: 0,
            minute: 0,
            second: 0,
            week_day: 0,
            year_day: 6,
            utc_offset: -(9 * 3600 + 30 * 60),
            zone: "-0930".to_owned(),
        };
        assert_eq!(render("%e|%I %p|%z|%u|%U|%W|%j|%y", &t), " 7|12 AM|-0930|7|01|01|007|01");
        let afternoon = LocalTime { hour: 13, ..t };
        assert_eq!(render("%I %l %p", &afternoon), "01  1 PM");
    }

    #[test]
    fn the_syslog_header_is_b_e_t() {
        assert_eq!(Ok(TimestampFormat::syslog_header()), TimestampFormat::parse("%b %e %T"));
    }

    #[test]
    fn unknown_conversions_flags_and_a_lone_percent_are_refused() {
        assert_eq!(TimestampFormat::parse("%Y %Q"), Err("unknown conversion %Q".to_owned()));
        assert_eq!(TimestampFormat::parse("%-d"), Err("unknown conversion %-".to_owned()));
        assert_eq!(TimestampFormat::parse("%Ey"), Err("unknown conversion %E".to_owned()));
        assert_eq!(TimestampFormat::parse("%V"), Err("unknown conversion %V".to_owned()));
        assert_eq!(TimestampFormat::parse("%Y%"), Err("the format ends with a lone %".to_owned()));
        assert_eq!(TimestampFormat::parse("%é"), Err("unknown conversion %é".to_owned()));
    }
}
