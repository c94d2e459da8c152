//! Detection tables: true positives in realistic sentences, look-alike true negatives, and the
//! trigger prefilter checked against trying every position.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use iron_core::pii::{Detector, PiiType};

fn found(text: &str) -> Vec<(PiiType, &str)> {
    Detector::global()
        .find_iter(text)
        .map(|m| (m.kind, &text[m.start..m.end]))
        .collect()
}

fn assert_finds(kind: PiiType, cases: &[(&str, &str)]) {
    for (sentence, value) in cases {
        let got = found(sentence);
        assert_eq!(got, vec![(kind, *value)], "in {sentence:?}");
    }
}

fn assert_clean(cases: &[&str]) {
    for sentence in cases {
        let got = found(sentence);
        assert!(got.is_empty(), "false positive in {sentence:?}: {got:?}");
    }
}

#[test]
fn email() {
    assert_finds(
        PiiType::Email,
        &[
            (
                "Contact alice.smith+tag@example.co.uk for details.",
                "alice.smith+tag@example.co.uk",
            ),
            ("mailto:bob@mail.example.com", "bob@mail.example.com"),
            ("(JANE_DOE99@Example.ORG)", "JANE_DOE99@Example.ORG"),
            ("send it to ops-team@corp-mail.io.", "ops-team@corp-mail.io"),
            ("x...john@x.com", "john@x.com"),
            ("{\"to\":\"carol@example.net\"}", "carol@example.net"),
        ],
    );
    assert_clean(&[
        "user@localhost is not routable",
        "ping @channel about it",
        "decorator @app.route('/')",
        "a@b.c is too short a TLD",
        "john@example.c0m",
    ]);
}

#[test]
fn phone() {
    assert_finds(
        PiiType::Phone,
        &[
            (
                "Call me at +1 (415) 555-2671 tomorrow.",
                "+1 (415) 555-2671",
            ),
            ("Office: (415) 555-2671.", "(415) 555-2671"),
            ("cell 415-555-2671, thanks", "415-555-2671"),
            ("or 415.555.2671", "415.555.2671"),
            ("E.164: +14155552671", "+14155552671"),
            ("London +44 20 7946 0958 office", "+44 20 7946 0958"),
            ("Berlin +49 30 12345678.", "+49 30 12345678"),
            ("Paris +33 1 23 45 67 89", "+33 1 23 45 67 89"),
            ("Amsterdam +31 (0)20 123 4567", "+31 (0)20 123 4567"),
            ("mobile 06 12 34 56 78", "06 12 34 56 78"),
            ("UK landline 020 7946 0958", "020 7946 0958"),
            ("mobile 07700 900123", "07700 900123"),
        ],
    );
    assert_clean(&[
        "scored +49 points",
        "Order 1234567890 shipped",
        "ISBN 978-3-16-148410-0",
        "timestamp 1700000000",
        "between 2019-2021 and 2022",
        "it grew 12.5% to 1,234,567 users",
        "Order #123-456-7890",
    ]);
}

#[test]
fn credit_card() {
    assert_finds(
        PiiType::CreditCard,
        &[
            ("Visa 4111 1111 1111 1111 exp 12/27", "4111 1111 1111 1111"),
            ("card: 5500-0000-0000-0004.", "5500-0000-0000-0004"),
            ("amex 378282246310005 ok", "378282246310005"),
            ("discover 6011111111111117", "6011111111111117"),
            ("mc 2223000048400011", "2223000048400011"),
            (
                "trailing group 4111 1111 1111 1111 12",
                "4111 1111 1111 1111",
            ),
        ],
    );
    assert_clean(&[
        "bad Luhn 4111 1111 1111 1112",
        "4111111111111112",
        "ms timestamp 1700000000123",
        "order 1234 5678 9012 3456",
        "all zeros 0000 0000 0000 0000",
        "uuid 550e8400-e29b-41d4-a716-446655440000",
    ]);
}

#[test]
fn us_ssn() {
    assert_finds(
        PiiType::UsSsn,
        &[
            ("SSN: 536-22-8145.", "536-22-8145"),
            ("ssn 536 22 8145", "536 22 8145"),
        ],
    );
    assert_clean(&[
        "area 666-12-3456",
        "area 000-12-3456",
        "area 912-12-3456",
        "group 536-00-8145",
        "serial 536-22-0000",
        "advertised 078-05-1120",
        "date 2024-01-15",
        "mixed 536-22 8145",
        "long 536-22-81456",
    ]);
}

#[test]
fn iban() {
    assert_finds(
        PiiType::Iban,
        &[
            (
                "IBAN DE89 3704 0044 0532 0130 00 please",
                "DE89 3704 0044 0532 0130 00",
            ),
            ("GB82WEST12345698765432", "GB82WEST12345698765432"),
            (
                "to FR14 2004 1010 0505 0001 3M02 606.",
                "FR14 2004 1010 0505 0001 3M02 606",
            ),
            (
                "DE89 3704 0044 0532 0130 00 EUR",
                "DE89 3704 0044 0532 0130 00",
            ),
            ("NO9386011117947", "NO9386011117947"),
        ],
    );
    assert_clean(&[
        "bad checksum DE89 3704 0044 0532 0130 01",
        "unknown country ZZ89 3704 0044 0532 0130 00",
        "wrong length DE89 3704 0044 0532 0130",
        "hash DE44A1B2C3D4E5F60718293A4B5C6D7E",
    ]);
}

#[test]
fn ip_address() {
    assert_finds(
        PiiType::IpAddress,
        &[
            ("client 192.168.1.20 connected", "192.168.1.20"),
            ("from 8.8.8.8.", "8.8.8.8"),
            (
                "v6 2001:db8:85a3::8a2e:370:7334 ok",
                "2001:db8:85a3::8a2e:370:7334",
            ),
            (
                "link fe80::1ff:fe23:4567:890a%eth0",
                "fe80::1ff:fe23:4567:890a",
            ),
            ("mapped ::ffff:192.0.2.128 here", "::ffff:192.0.2.128"),
            ("host 2001:db8::1: down", "2001:db8::1"),
        ],
    );
    assert_clean(&[
        "version 1.2.3",
        "five parts 1.2.3.4.5",
        "octet 999.1.1.1",
        "semver v2.10.4-beta.1",
        "time 10:30:00",
        "timestamp 2024-01-15T10:30:00Z",
        "mac 00:1A:2B:3C:4D:5E",
        "C++ std::vector and a::b",
        "loopback ::1",
        "unspecified 0.0.0.0",
    ]);
}

const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
const PEM: &str = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\nVTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK\n-----END RSA PRIVATE KEY-----";

#[test]
fn secrets() {
    let openai = "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAb7cDe0fGh3iJk6lMn9o";
    let openai_legacy = "sk-AbCdEf1234567890GhIjKl1234567890MnOpQrSt12345678";
    let anthropic = "sk-ant-api03-Xy7_abcDEF123456789-ghiJKL987654321mnoPQR-stuVWX000AA";
    let ghp = "ghp_16C7e42F292c6912E7710c838347Ae178B4a";
    let gh_pat =
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123";
    let slack = "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx";
    let aws = "AKIAIOSFODNN7EXAMPLE";
    let cases: Vec<(String, &str)> = vec![
        (format!("export OPENAI_API_KEY={openai}"), openai),
        (format!("key \"{openai_legacy}\" leaked"), openai_legacy),
        (format!("ANTHROPIC_API_KEY={anthropic} ok"), anthropic),
        (format!("token: {ghp}"), ghp),
        (format!("token: {gh_pat}."), gh_pat),
        (format!("slack {slack} bot"), slack),
        (format!("aws_access_key_id = {aws}"), aws),
        (format!("Authorization: Bearer {JWT} end"), JWT),
        (format!("key:\n{PEM}\nthanks"), PEM),
        // JSON-escaped newlines inside a tool argument string.
        (format!("{{\"key\":\"{}\"}}", PEM.replace('\n', "\\n")), ""),
    ];
    for (i, (sentence, value)) in cases.iter().enumerate() {
        let got = found(sentence);
        assert_eq!(got.len(), 1, "in {sentence:?}: {got:?}");
        assert_eq!(got[0].0, PiiType::Secret);
        if i + 1 == cases.len() {
            assert_eq!(got[0].1, PEM.replace('\n', "\\n"));
        } else {
            assert_eq!(got[0].1, *value, "in {sentence:?}");
        }
    }
    assert_clean(&[
        "use sk-learn-compatible-estimators here",
        "the task-based approach",
        "sk-short1A",
        "AKIA is a prefix",
        "ghp_tooShort123",
        "eyJ is how base64 JSON starts; eyJhbGciOiJIUzI1NiJ9 alone is no JWT",
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
        "-----BEGIN PUBLIC KEY-----",
    ]);
}

#[test]
fn clean_lookalikes() {
    assert_clean(&[
        "Released on 2024-01-15 at 10:30:00 (build 20240115.3).",
        "See commit a94a8fe5ccb19ba61c4c0873d391e987982fbbd3 and sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855.",
        "request id 550e8400-e29b-41d4-a716-446655440000 took 1234 ms",
        "Upgrade to v1.2.3 or 10.4.1-rc2; semver ^2.0.0.",
        "Invoice INV-2024-000123, PO 4500012345, total $1,234.56.",
        "Run `cargo test -p iron-core` on port 8080 with 2 cores.",
        "In 2019, 45% of 1,200 respondents said so.",
        "Unicode café naïve 日本語 ñ 1 2 3 — ok",
    ]);
}

#[test]
fn multiple_in_order_non_overlapping() {
    let text = "Mail a@example.com, call +1 415-555-2671, card 4111 1111 1111 1111, ip 10.0.0.7.";
    let got = found(text);
    let kinds: Vec<PiiType> = got.iter().map(|g| g.0).collect();
    assert_eq!(
        kinds,
        vec![
            PiiType::Email,
            PiiType::Phone,
            PiiType::CreditCard,
            PiiType::IpAddress
        ]
    );
    let ms: Vec<_> = Detector::global().find_iter(text).collect();
    assert!(ms.windows(2).all(|w| w[0].end <= w[1].start));
}
