//! `Meter::count_text` must count exactly what tiktoken-rs's o200k_base counts: fixed cases for
//! every alternative of the pre-tokenizer pattern, random text over every character class it
//! distinguishes, long pieces (heap merge), and real source files.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use iron_core::meter::Meter;
use proptest::prelude::*;

fn reference(text: &str) -> u64 {
    tiktoken_rs::o200k_base_singleton()
        .encode_ordinary(text)
        .len() as u64
}

fn meter() -> &'static Meter {
    let m = Meter::global();
    assert!(m.is_exact(), "the o200k tokenizer must build");
    m
}

#[track_caller]
fn same(text: &str) {
    assert_eq!(
        meter().count_text(text),
        reference(text),
        "count differs for {text:?}"
    );
}

#[test]
fn known_counts() {
    let m = meter();
    assert_eq!(m.count_text(""), 0);
    assert_eq!(m.count_text("Hello"), 1);
    assert_eq!(m.count_text("Hello, world!"), 4);
    assert_eq!(m.count_text("Paris is the capital of France."), 7);
}

#[test]
fn every_pattern_alternative() {
    for text in [
        // words, prefixes, case runs, contractions (case-insensitive, ſ folds to s)
        "Hello world",
        " HELLO world",
        "CamelCaseWordsAndHTTPServer",
        "don't we'll they're I'M you'VE he'd it's",
        "'twas",
        "x'ſ",
        "ABC'S def'LL",
        "'hello",
        "\tTabbed",
        ".dotted",
        "__init__",
        "É école ÀÉÎ",
        // digits
        "1",
        "12",
        "123",
        "1234567",
        "3.14159",
        "$5,000,000.00",
        "٣٤٥",
        "½ Ⅻ",
        // symbols, optional space, trailing newlines and slashes
        " ...",
        "a // b",
        "path/to/file",
        "!!\n\n/",
        "->\r\n",
        " ?!\n/x",
        "😀😀 🎉",
        "€100",
        "«quoted»",
        // whitespace: line breaks, runs before words, trailing runs, unicode spaces
        "a\n\nb",
        "a \n \n  b",
        "a   b",
        "a   ",
        "   ",
        "\n",
        "\r\n\r\n",
        "x\u{a0}\u{a0}y",
        "x\u{3000}y",
        "a\t\t\tb",
        " \u{2028}x",
        "end \n",
        // marks, CJK, other scripts
        "e\u{301}\u{301}",
        "\u{301}abc",
        "日本語のテキストです。",
        "Привет, мир!",
        "مرحبا بالعالم",
        "ǅemal ʰa",
        "한국어 텍스트",
        "ไทย",
        "हिन्दी",
        // special-token text counts as ordinary text
        "<|endoftext|>",
        "<|endofprompt|> x",
        // code and JSON
        "fn main() {\n    println!(\"hi\");\n}\n",
        "{\"a\":[1,2,{\"b\":null}]}",
    ] {
        same(text);
    }
}

#[test]
fn long_pieces_use_the_heap_merge() {
    for text in [
        "a".repeat(5_000),
        " ".repeat(3_000),
        "ab".repeat(700),
        "x".repeat(99),
        "y".repeat(100),
        "=".repeat(4_096),
        "\n".repeat(1_000),
        "Supercalifragilisticexpialidocious".repeat(20),
        "日本".repeat(400),
        "0123456789".repeat(100),
    ] {
        same(&text);
    }
}

#[test]
fn source_files_match() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut checked = 0;
    let mut stack = vec![dir];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(text) = std::fs::read_to_string(&path) {
                same(&text);
                checked += 1;
            }
        }
    }
    assert!(checked > 5);
}

/// Characters covering each class of the pattern: ASCII letters of both cases, digits,
/// apostrophes and contraction letters, spaces, tabs, CR/LF, slashes, punctuation, controls,
/// non-ASCII upper/lower/title/modifier/other letters, combining marks, other-script digits,
/// numeric symbols, Unicode spaces and line separators, emoji, long s.
const ALPHABET: &[char] = &[
    'a', 'b', 's', 't', 'r', 'e', 'v', 'm', 'l', 'd', 'A', 'B', 'S', 'T', 'L', 'E', 'Z', '0', '1',
    '9', '\'', '\'', ' ', ' ', ' ', '\t', '\n', '\r', '/', '.', ',', '!', '-', '_', '{', '"',
    '\u{0}', '\u{7}', '\u{b}', '\u{c}', '\u{1f}', 'É', 'é', 'ǅ', 'ʰ', '日', 'ア', '\u{301}',
    '\u{94d}', '٣', '½', 'Ⅻ', '\u{a0}', '\u{85}', '\u{2028}', '\u{3000}', '😀', '𝐀', '𝐚', '𝟘', 'ſ',
    '€', '«', '\u{200b}', 'ß', 'İ',
];

fn text_from(alphabet: &'static [char]) -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(alphabet), 0..48)
        .prop_map(|cs| cs.into_iter().collect())
}

const WORDS: &[&str] = &[
    "the",
    " the",
    "The",
    " quick",
    "brown",
    " fox",
    "'s",
    "n't",
    " I'm",
    "HTTP",
    "Server",
    "42",
    " 1999",
    "3.14",
    "\n",
    "\n\n",
    "  ",
    "   ",
    "\t",
    ", ",
    ". ",
    "!",
    "?",
    "/",
    "//",
    "->",
    "()",
    "{}",
    "\":\"",
    "日本",
    "Ünïcödé",
    "😀",
    "don't",
    "x",
    "y",
    "\r\n",
    "/*",
    "*/",
    "snake_case",
    "camelCase",
    "ALLCAPS",
    "\u{a0}",
    "é",
];

fn words() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(WORDS), 0..40).prop_map(|ws| ws.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn random_characters_match(text in text_from(ALPHABET)) {
        prop_assert_eq!(meter().count_text(&text), reference(&text), "text {:?}", text);
    }

    #[test]
    fn random_words_match(text in words()) {
        prop_assert_eq!(meter().count_text(&text), reference(&text), "text {:?}", text);
    }

    #[test]
    fn arbitrary_strings_match(text in "\\PC{0,64}") {
        prop_assert_eq!(meter().count_text(&text), reference(&text), "text {:?}", text);
    }
}
