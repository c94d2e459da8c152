//! Validators: the second half of detection. The multi-pattern regex ([`super::detector`])
//! proposes a candidate span; the function here for its pattern confirms it (checksums,
//! number-plan rules, address parsing, token shape) and may shorten it. Validators see only
//! the candidate bytes and the byte before it, except the two "extensions" (PEM blocks and
//! JWTs) that read past the regex head up to an explicit bound and can ask for more input
//! (`NeedMore`) while streaming. That locality is what makes streamed output equal whole-text
//! output.

use std::net::Ipv6Addr;

/// Longest PEM private-key block (header to footer) the detector follows, in bytes. An RSA-8192
/// key is about 6.4 KB; longer blocks are redacted up to this bound only.
pub const PEM_MAX: usize = 16 * 1024;
/// Longest JWT the detector follows, in bytes; longer tokens are redacted up to this bound only.
pub const JWT_MAX: usize = 8 * 1024;

/// Outcome of validating one candidate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Confirmed; the match ends at this offset (≤ the candidate's end unless an extension).
    Accept(usize),
    /// Not this pattern.
    Reject,
    /// An extension reached the end of the available text before its bound (streaming only).
    NeedMore,
}

pub(crate) const fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Luhn checksum over ASCII digits (other bytes ignored).
pub(crate) fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    let mut double = false;
    for &b in digits.iter().rev() {
        let mut d = u32::from(b.wrapping_sub(b'0'));
        if double {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
        double = !double;
    }
    sum.is_multiple_of(10)
}

/// Issuer (IIN) prefix and length rules of the major card networks.
fn card_issuer_ok(d: &[u8]) -> bool {
    let n = d.len();
    let prefix = |k: usize| -> u32 {
        d.iter()
            .take(k)
            .fold(0u32, |acc, &b| acc * 10 + u32::from(b - b'0'))
    };
    let (p2, p3, p4, p6) = (prefix(2), prefix(3), prefix(4), prefix(6));
    let len = |lo: usize, hi: usize| (lo..=hi).contains(&n);
    let visa = d.first() == Some(&b'4') && matches!(n, 13 | 16 | 19);
    let mastercard = ((51..=55).contains(&p2) || (2221..=2720).contains(&p4)) && n == 16;
    let amex = (p2 == 34 || p2 == 37) && n == 15;
    let diners = ((300..=305).contains(&p3) || matches!(p2, 36 | 38 | 39)) && len(14, 19);
    let jcb = (3528..=3589).contains(&p4) && len(16, 19);
    let discover =
        (p4 == 6011 || p2 == 65 || (644..=649).contains(&p3) || (622_126..=622_925).contains(&p6))
            && len(16, 19);
    let unionpay = p2 == 62 && len(16, 19);
    let maestro = (p2 == 50 || (56..=58).contains(&p2) || p2 == 63 || p2 == 67) && len(12, 19);
    visa || mastercard || amex || diners || jcb || discover || unionpay || maestro
}

/// A card number candidate: digits with optional single spaces/dashes. Tries the whole
/// candidate, then shorter prefixes ending before a separator (longest first).
pub(crate) fn card(text: &[u8], start: usize) -> Verdict {
    let mut digits = [0u8; 19];
    let mut cut = text.len();
    loop {
        let body = &text[..cut];
        let mut n = 0usize;
        let mut ok = true;
        for &b in body {
            if b.is_ascii_digit() {
                if n == digits.len() {
                    ok = false;
                    break;
                }
                digits[n] = b;
                n += 1;
            }
        }
        if ok && (13..=19).contains(&n) {
            let d = &digits[..n];
            let all_same = d.iter().all(|&x| x == d[0]);
            if !all_same && card_issuer_ok(d) && luhn(d) {
                return Verdict::Accept(start + cut);
            }
        }
        // Next shorter prefix: cut before the last separator.
        match body.iter().rposition(|&b| b == b' ' || b == b'-') {
            Some(p) if p > 0 => cut = p,
            _ => return Verdict::Reject,
        }
    }
}

/// `AAA-GG-SSSS` (dashes or spaces): area not 000/666/9xx, group not 00, serial not 0000, and
/// not one of the well-known advertising numbers.
pub(crate) fn ssn(text: &[u8], start: usize) -> Verdict {
    let mut digits = [0u32; 9];
    let mut n = 0;
    for &b in text {
        if b.is_ascii_digit() {
            if n == 9 {
                return Verdict::Reject;
            }
            digits[n] = u32::from(b - b'0');
            n += 1;
        }
    }
    if n != 9 {
        return Verdict::Reject;
    }
    let area = digits[0] * 100 + digits[1] * 10 + digits[2];
    let group = digits[3] * 10 + digits[4];
    let serial = digits[5] * 1000 + digits[6] * 100 + digits[7] * 10 + digits[8];
    let famous = (area, group, serial) == (78, 5, 1120) || (area, group, serial) == (219, 9, 9999);
    if area == 0 || area == 666 || area >= 900 || group == 0 || serial == 0 || famous {
        return Verdict::Reject;
    }
    Verdict::Accept(start + text.len())
}

/// IBAN lengths by country (SWIFT registry).
const IBAN_LENGTHS: &[(&[u8; 2], usize)] = &[
    (b"AD", 24),
    (b"AE", 23),
    (b"AL", 28),
    (b"AT", 20),
    (b"AZ", 28),
    (b"BA", 20),
    (b"BE", 16),
    (b"BG", 22),
    (b"BH", 22),
    (b"BI", 27),
    (b"BR", 29),
    (b"BY", 28),
    (b"CH", 21),
    (b"CR", 22),
    (b"CY", 28),
    (b"CZ", 24),
    (b"DE", 22),
    (b"DJ", 27),
    (b"DK", 18),
    (b"DO", 28),
    (b"EE", 20),
    (b"EG", 29),
    (b"ES", 24),
    (b"FI", 18),
    (b"FK", 18),
    (b"FO", 18),
    (b"FR", 27),
    (b"GB", 22),
    (b"GE", 22),
    (b"GI", 23),
    (b"GL", 18),
    (b"GR", 27),
    (b"GT", 28),
    (b"HR", 21),
    (b"HU", 28),
    (b"IE", 22),
    (b"IL", 23),
    (b"IQ", 23),
    (b"IS", 26),
    (b"IT", 27),
    (b"JO", 30),
    (b"KW", 30),
    (b"KZ", 20),
    (b"LB", 28),
    (b"LC", 32),
    (b"LI", 21),
    (b"LT", 20),
    (b"LU", 20),
    (b"LV", 21),
    (b"LY", 25),
    (b"MC", 27),
    (b"MD", 24),
    (b"ME", 22),
    (b"MK", 19),
    (b"MN", 20),
    (b"MR", 27),
    (b"MT", 31),
    (b"MU", 30),
    (b"NI", 28),
    (b"NL", 18),
    (b"NO", 15),
    (b"OM", 23),
    (b"PK", 24),
    (b"PL", 28),
    (b"PS", 29),
    (b"QA", 29),
    (b"RO", 24),
    (b"RS", 22),
    (b"RU", 33),
    (b"SA", 24),
    (b"SC", 31),
    (b"SD", 18),
    (b"SE", 24),
    (b"SI", 19),
    (b"SK", 24),
    (b"SM", 27),
    (b"SO", 23),
    (b"ST", 25),
    (b"SV", 28),
    (b"TL", 23),
    (b"TN", 24),
    (b"TR", 26),
    (b"UA", 29),
    (b"VA", 22),
    (b"VG", 24),
    (b"XK", 20),
    (b"YE", 30),
];

/// mod-97 of the rearranged IBAN (country code and check digits moved to the end, letters as
/// two-digit numbers) equals 1.
pub(crate) fn iban_checksum(chars: &[u8]) -> bool {
    if chars.len() < 5 {
        return false;
    }
    // Accumulate in a u64 and reduce only when it could overflow (divisions are slow).
    let mut acc = 0u64;
    for &b in chars[4..].iter().chain(&chars[..4]) {
        let v = match b {
            b'0'..=b'9' => u64::from(b - b'0'),
            b'A'..=b'Z' => u64::from(b - b'A') + 10,
            _ => return false,
        };
        if acc >= 1 << 50 {
            acc %= 97;
        }
        acc = if v >= 10 { acc * 100 + v } else { acc * 10 + v };
    }
    acc % 97 == 1
}

/// An IBAN candidate `CCkk` + groups with optional single spaces: trimmed to the country's
/// length; the trimmed end must fall before a space or at the candidate's end.
pub(crate) fn iban(text: &[u8], start: usize) -> Verdict {
    let Some(&(_, len)) = IBAN_LENGTHS
        .iter()
        .find(|(cc, _)| text.starts_with(&cc[..]))
    else {
        return Verdict::Reject;
    };
    let mut chars = [0u8; 34];
    let mut n = 0;
    let mut end = None;
    for (i, &b) in text.iter().enumerate() {
        if b == b' ' {
            continue;
        }
        if n == len {
            // One more alphanumeric after the country length: only fine after a space.
            if text[i - 1] != b' ' {
                return Verdict::Reject;
            }
            break;
        }
        chars[n] = b;
        n += 1;
        if n == len {
            end = Some(i + 1);
        }
    }
    match end {
        Some(e) if iban_checksum(&chars[..len]) => Verdict::Accept(start + e),
        _ => Verdict::Reject,
    }
}

/// IPv4 dotted quad: four decimal octets ≤ 255 without leading zeros, not `0.0.0.0`.
/// Rejected when it continues a longer dotted number (`1.2.3.4.5`): the regex captures one
/// more `.digit` in that case, and the byte before must not be a dot.
pub(crate) fn ipv4(text: &[u8], start: usize, prev: Option<u8>) -> Verdict {
    if prev == Some(b'.') {
        return Verdict::Reject;
    }
    let mut parts = 0;
    let mut all_zero = true;
    for octet in text.split(|&b| b == b'.') {
        parts += 1;
        let ok = !octet.is_empty()
            && octet.len() <= 3
            && octet.iter().all(u8::is_ascii_digit)
            && !(octet.len() > 1 && octet[0] == b'0');
        if !ok {
            return Verdict::Reject;
        }
        let value = octet
            .iter()
            .fold(0u32, |acc, &b| acc * 10 + u32::from(b - b'0'));
        if value > 255 {
            return Verdict::Reject;
        }
        all_zero &= value == 0;
    }
    if parts != 4 || all_zero {
        return Verdict::Reject;
    }
    Verdict::Accept(start + text.len())
}

/// IPv6 address: must parse, have at least three non-empty groups (so `a::b`, `::1` and C++
/// paths like `d::f` are not addresses) and contain a digit. A trailing `:` is trimmed.
pub(crate) fn ipv6(text: &[u8], start: usize, prev: Option<u8>) -> Verdict {
    if prev == Some(b':') {
        return Verdict::Reject;
    }
    let mut t = text;
    if t.ends_with(b":") && !t.ends_with(b"::") {
        t = &t[..t.len() - 1];
    }
    let Ok(s) = std::str::from_utf8(t) else {
        return Verdict::Reject;
    };
    if s.parse::<Ipv6Addr>().is_err() {
        return Verdict::Reject;
    }
    let groups = s.split([':', '.']).filter(|g| !g.is_empty()).count();
    if groups < 3 || !t.iter().any(u8::is_ascii_digit) {
        return Verdict::Reject;
    }
    Verdict::Accept(start + t.len())
}

/// Count of ASCII digits.
fn digit_count(text: &[u8]) -> usize {
    text.iter().filter(|b| b.is_ascii_digit()).count()
}

/// A phone candidate: `min..=max` digits (a `(0)` trunk marker not counted). Too many digits:
/// shorter prefixes ending before a separator are tried, longest first.
pub(crate) fn phone(text: &[u8], start: usize, min: usize, max: usize) -> Verdict {
    let mut cut = text.len();
    loop {
        let body = &text[..cut];
        let trunk = body.windows(3).filter(|w| *w == b"(0)").count();
        let n = digit_count(body).saturating_sub(trunk);
        if (min..=max).contains(&n) {
            return Verdict::Accept(start + cut);
        }
        if n < min {
            return Verdict::Reject;
        }
        match body.iter().rposition(|&b| matches!(b, b' ' | b'-' | b'.')) {
            Some(p) if p > 0 => {
                cut = p;
                while cut > 0 && matches!(body[cut - 1], b' ' | b'-' | b'.') {
                    cut -= 1;
                }
            }
            _ => return Verdict::Reject,
        }
    }
}

/// E-mail: local part must not start or end with a dot nor contain `..`; the domain at most
/// 253 bytes; labels must not start or end with `-` (the regex enforces the rest).
pub(crate) fn email(text: &[u8], start: usize) -> Verdict {
    let Some(at) = text.iter().position(|&b| b == b'@') else {
        return Verdict::Reject;
    };
    let (local, domain) = (&text[..at], &text[at + 1..]);
    if local.first() == Some(&b'.')
        || local.last() == Some(&b'.')
        || local.windows(2).any(|w| w == b"..")
        || domain.len() > 253
    {
        return Verdict::Reject;
    }
    Verdict::Accept(start + text.len())
}

/// Token body after a fixed prefix: mixed character classes, so words like
/// `sk-learn-compatible-estimators` are not keys.
pub(crate) fn mixed_token(body: &[u8], end: usize, need_upper: bool) -> Verdict {
    let digit = body.iter().any(u8::is_ascii_digit);
    let lower = body.iter().any(u8::is_ascii_lowercase);
    let upper = body.iter().any(u8::is_ascii_uppercase);
    if digit && lower && (upper || !need_upper) {
        Verdict::Accept(end)
    } else {
        Verdict::Reject
    }
}

const fn is_b64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// Run of base64url bytes from `i`, stopping at `limit`. Returns the end and whether the run
/// was stopped by the end of the available text (rather than a foreign byte or the limit).
fn b64url_run(hay: &[u8], mut i: usize, limit: usize) -> (usize, bool) {
    let stop = limit.min(hay.len());
    while i < stop && is_b64url(hay[i]) {
        i += 1;
    }
    (i, i == hay.len() && i < limit)
}

/// JWT extension. The regex head is `eyJ` + a few base64url bytes (at `start..head_end`);
/// this follows `header.payload.signature`, the payload starting with `eyJ` too, up to
/// [`JWT_MAX`] bytes (a longer token is cut at the bound).
pub(crate) fn jwt(hay: &[u8], start: usize, head_end: usize, eof: bool) -> Verdict {
    let limit = start + JWT_MAX;
    let more = |at_end: bool| at_end && !eof;
    // header
    let (i, at_end) = b64url_run(hay, head_end, limit);
    if more(at_end) {
        return Verdict::NeedMore;
    }
    if i >= limit {
        return Verdict::Reject;
    }
    if hay[i..].len() < 4 {
        return if eof {
            Verdict::Reject
        } else {
            Verdict::NeedMore
        };
    }
    if &hay[i..i + 4] != b".eyJ" {
        return Verdict::Reject;
    }
    // payload
    let (j, at_end) = b64url_run(hay, i + 4, limit);
    if more(at_end) {
        return Verdict::NeedMore;
    }
    if j >= limit {
        return Verdict::Accept(limit);
    }
    match hay.get(j) {
        Some(b'.') => {}
        Some(_) => return Verdict::Reject,
        None => {
            return if eof {
                Verdict::Reject
            } else {
                Verdict::NeedMore
            };
        }
    }
    // signature (may be empty for `alg: none`)
    let (k, at_end) = b64url_run(hay, j + 1, limit);
    if more(at_end) {
        return Verdict::NeedMore;
    }
    Verdict::Accept(k)
}

const fn is_pem_body(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'+' | b'/' | b'=' | b' ' | b'\t' | b'\r' | b'\n' | b'\\' | b':' | b',' | b'-' | b'.'
        )
}

/// PEM private-key extension. The regex head is the `-----BEGIN … PRIVATE KEY-----` line; this
/// follows the base64 body (newlines may be real or JSON-escaped `\n`, legacy `Proc-Type:` /
/// `DEK-Info:` headers allowed) to the `-----END …-----` footer. Without a footer the block
/// ends at the last body byte, or at [`PEM_MAX`] bytes from the header.
pub(crate) fn pem(hay: &[u8], start: usize, head_end: usize, eof: bool) -> Verdict {
    let limit = start + PEM_MAX;
    let mut i = head_end;
    loop {
        if i >= limit {
            return Verdict::Accept(trim_pem_end(hay, head_end, limit));
        }
        let Some(&b) = hay.get(i) else {
            return if eof {
                Verdict::Accept(trim_pem_end(hay, head_end, i))
            } else {
                Verdict::NeedMore
            };
        };
        if b == b'-' {
            match footer(hay, i, limit) {
                Footer::End(e) => return Verdict::Accept(e),
                Footer::NeedMore if !eof => return Verdict::NeedMore,
                Footer::NeedMore | Footer::No => {}
            }
        }
        if !is_pem_body(b) {
            return Verdict::Accept(trim_pem_end(hay, head_end, i));
        }
        i += 1;
    }
}

enum Footer {
    End(usize),
    No,
    NeedMore,
}

/// `-----END <LABEL>-----` starting at `i`, within `limit`.
fn footer(hay: &[u8], i: usize, limit: usize) -> Footer {
    const OPEN: &[u8] = b"-----END ";
    let stop = hay.len().min(limit);
    let truncated = hay.len() < limit;
    let avail = &hay[i..stop];
    let n = avail.len().min(OPEN.len());
    if avail[..n] != OPEN[..n] {
        return Footer::No;
    }
    if n < OPEN.len() {
        return if truncated {
            Footer::NeedMore
        } else {
            Footer::No
        };
    }
    let label_start = i + OPEN.len();
    let mut j = label_start;
    while j < stop
        && j < label_start + 64
        && (hay[j].is_ascii_uppercase() || hay[j].is_ascii_digit() || hay[j] == b' ')
    {
        j += 1;
    }
    if j == stop && j < label_start + 64 {
        return if truncated {
            Footer::NeedMore
        } else {
            Footer::No
        };
    }
    let dashes = &hay[j..stop.min(j + 5)];
    if dashes.iter().any(|&b| b != b'-') {
        return Footer::No;
    }
    if dashes.len() < 5 {
        return if truncated {
            Footer::NeedMore
        } else {
            Footer::No
        };
    }
    Footer::End(j + 5)
}

/// Drop trailing whitespace (and JSON-escaped `\n`/`\r`) from an unterminated block.
fn trim_pem_end(hay: &[u8], head_end: usize, mut end: usize) -> usize {
    loop {
        if end > head_end && matches!(hay[end - 1], b' ' | b'\t' | b'\r' | b'\n') {
            end -= 1;
        } else if end >= head_end + 2
            && hay[end - 2] == b'\\'
            && matches!(hay[end - 1], b'n' | b'r')
        {
            end -= 2;
        } else {
            return end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_known() {
        assert!(luhn(b"4111111111111111"));
        assert!(luhn(b"79927398713"));
        assert!(!luhn(b"4111111111111112"));
    }

    #[test]
    fn iban_known() {
        assert!(iban_checksum(b"DE89370400440532013000"));
        assert!(iban_checksum(b"GB82WEST12345698765432"));
        assert!(!iban_checksum(b"DE89370400440532013001"));
        assert_eq!(iban(b"DE89 3704 0044 0532 0130 00", 0), Verdict::Accept(27));
        assert_eq!(
            iban(b"DE89 3704 0044 0532 0130 00 12", 0),
            Verdict::Accept(27)
        );
        assert_eq!(iban(b"DE89370400440532013000123", 0), Verdict::Reject);
    }

    #[test]
    fn card_trims_to_valid_prefix() {
        assert_eq!(card(b"4111 1111 1111 1111 12", 0), Verdict::Accept(19));
        assert_eq!(card(b"4111 1111 1111 1112", 0), Verdict::Reject);
        assert_eq!(card(b"1700000000123", 0), Verdict::Reject);
    }

    #[test]
    fn jwt_and_pem_need_more_until_determined() {
        let t = b"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl";
        assert_eq!(jwt(t, 0, 8, false), Verdict::NeedMore);
        assert_eq!(jwt(t, 0, 8, true), Verdict::Accept(t.len()));
        let mut u = t.to_vec();
        u.push(b' ');
        assert_eq!(jwt(&u, 0, 8, false), Verdict::Accept(t.len()));
        let p = b"-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\nx";
        assert_eq!(pem(p, 0, 27, false), Verdict::Accept(p.len() - 2));
        assert_eq!(pem(&p[..40], 0, 27, false), Verdict::NeedMore);
        assert_eq!(pem(&p[..40], 0, 27, true), Verdict::Accept(40));
    }
}
