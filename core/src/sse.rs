//! Incremental server-sent-events codec (stage 8, *stream*).
//!
//! The proxy feeds upstream body chunks into an [`SseDecoder`] as they arrive and gets back
//! complete [`SseEvent`]s; the stream stage meters, redacts and re-encodes them with
//! [`encode_event`]. Chunks may split an event anywhere (inside a field, inside a CRLF);
//! the decoder keeps the partial tail and resumes scanning where it stopped, so the work per
//! chunk is O(chunk). Single-line `data` fields (every OpenAI and Anthropic event) are
//! zero-copy slices of the received bytes.
//!
//! Parsing follows the WHATWG event-stream rules: lines end in LF, CRLF or CR; a blank line
//! ends an event; lines starting with `:` are comments; `field:value` drops one leading
//! space of the value; multiple `data` lines join with `\n`.

use bytes::{Bytes, BytesMut};

/// Default cap for one event (bytes): a bound on memory per stream.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// One parsed event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    /// The exact bytes of the event as received, including its terminating blank line.
    pub raw: Bytes,
    /// The `event:` field, if any.
    pub event: Option<Bytes>,
    /// The joined `data:` lines (empty when the event had none).
    pub data: Bytes,
    /// The `id:` field, if any.
    pub id: Option<Bytes>,
    /// True when the event had at least one `data` line.
    pub has_data: bool,
}

impl SseEvent {
    /// The event name as UTF-8, if present and valid.
    pub fn event_name(&self) -> Option<&str> {
        self.event
            .as_ref()
            .and_then(|e| std::str::from_utf8(e).ok())
    }

    /// True for events that carry nothing (comments only / keep-alives).
    pub fn is_comment_only(&self) -> bool {
        !self.has_data && self.event.is_none() && self.id.is_none()
    }
}

/// Errors of the decoder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("server-sent event larger than {0} bytes")]
    EventTooLarge(usize),
}

#[derive(Default)]
struct Pending {
    event: Option<(usize, usize)>,
    id: Option<(usize, usize)>,
    data: Vec<(usize, usize)>,
}

/// Incremental decoder; see the module docs.
pub struct SseDecoder {
    buf: BytesMut,
    /// Where the next unscanned line starts (relative to `buf`, which starts at the event).
    scan: usize,
    pending: Pending,
    max_event: usize,
}

impl Default for SseDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for SseDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseDecoder")
            .field("buffered", &self.buf.len())
            .finish()
    }
}

impl SseDecoder {
    pub fn new() -> Self {
        Self::with_max_event_bytes(DEFAULT_MAX_EVENT_BYTES)
    }

    pub fn with_max_event_bytes(max_event: usize) -> Self {
        SseDecoder {
            buf: BytesMut::new(),
            scan: 0,
            pending: Pending::default(),
            max_event,
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// Bytes received but not yet part of a returned event.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Returns the next complete event, or `None` when more bytes are needed.
    pub fn next_event(&mut self) -> Result<Option<SseEvent>, SseError> {
        loop {
            let rest = &self.buf[self.scan..];
            let Some(nl) = memchr::memchr2(b'\n', b'\r', rest) else {
                return self.check_size().map(|()| None);
            };
            let line_start = self.scan;
            let line_end = self.scan + nl;
            let term_len = if rest[nl] == b'\r' {
                match rest.get(nl + 1) {
                    Some(b'\n') => 2,
                    Some(_) => 1,
                    // A lone CR at the end of the buffer may be the first half of CRLF.
                    None => return self.check_size().map(|()| None),
                }
            } else {
                1
            };
            self.scan = line_end + term_len;
            if line_end == line_start {
                return Ok(Some(self.take_event()));
            }
            self.parse_line(line_start, line_end);
        }
    }

    /// At end of stream: returns a final event that lacked its blank line, if any.
    pub fn finish(&mut self) -> Option<SseEvent> {
        if self.buf.is_empty() {
            return None;
        }
        if self.scan < self.buf.len() {
            let (start, end) = (self.scan, self.buf.len());
            let end = if self.buf[end - 1] == b'\r' {
                end - 1
            } else {
                end
            };
            // A lone CR at the end is an empty line (it ends the event): nothing to parse.
            if end > start {
                self.parse_line(start, end);
            }
            self.scan = self.buf.len();
        }
        Some(self.take_event())
    }

    fn check_size(&self) -> Result<(), SseError> {
        if self.buf.len() > self.max_event {
            Err(SseError::EventTooLarge(self.max_event))
        } else {
            Ok(())
        }
    }

    fn parse_line(&mut self, start: usize, end: usize) {
        let line = &self.buf[start..end];
        if line[0] == b':' {
            return;
        }
        let (name_end, value_start) = match memchr::memchr(b':', line) {
            Some(c) => {
                let v = if line.get(c + 1) == Some(&b' ') {
                    c + 2
                } else {
                    c + 1
                };
                (c, v)
            }
            None => (line.len(), line.len()),
        };
        let value = (start + value_start, end);
        match &line[..name_end] {
            b"data" => self.pending.data.push(value),
            b"event" => self.pending.event = Some(value),
            b"id" => self.pending.id = Some(value),
            _ => {}
        }
    }

    fn take_event(&mut self) -> SseEvent {
        let raw = self.buf.split_to(self.scan).freeze();
        self.scan = 0;
        let p = std::mem::take(&mut self.pending);
        let slice = |(s, e): (usize, usize)| raw.slice(s..e);
        let data = match p.data.as_slice() {
            [] => Bytes::new(),
            [one] => slice(*one),
            many => {
                let mut joined = BytesMut::new();
                for (i, r) in many.iter().enumerate() {
                    if i > 0 {
                        joined.extend_from_slice(b"\n");
                    }
                    joined.extend_from_slice(&raw[r.0..r.1]);
                }
                joined.freeze()
            }
        };
        SseEvent {
            event: p.event.map(slice),
            id: p.id.map(slice),
            has_data: !p.data.is_empty(),
            data,
            raw,
        }
    }
}

/// Encodes one event: optional `event:` line, one `data:` line per line of `data`, blank line.
pub fn encode_event(event: Option<&str>, data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + event.map_or(0, str::len) + 16);
    encode_event_into(&mut out, event, data);
    out.freeze()
}

/// Like [`encode_event`], appending to `out`.
pub fn encode_event_into(out: &mut BytesMut, event: Option<&str>, data: &[u8]) {
    if let Some(name) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\n");
    }
    for line in data.split(|&b| b == b'\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line);
        out.extend_from_slice(b"\n");
    }
    out.extend_from_slice(b"\n");
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut d = SseDecoder::new();
        let mut out = Vec::new();
        for c in chunks {
            d.push(c);
            while let Some(e) = d.next_event().unwrap() {
                out.push(e);
            }
        }
        out.extend(d.finish());
        out
    }

    #[test]
    fn parses_named_events_and_data() {
        let evs = decode_all(&[b"event: ping\ndata: {\"type\": \"ping\"}\n\ndata: [DONE]\n\n"]);
        assert_eq!(evs.len(), 2);
        assert_eq!(evs[0].event_name(), Some("ping"));
        assert_eq!(&evs[0].data[..], b"{\"type\": \"ping\"}");
        assert_eq!(&evs[1].data[..], b"[DONE]");
        assert_eq!(&evs[1].raw[..], b"data: [DONE]\n\n");
    }

    #[test]
    fn handles_crlf_cr_comments_and_multiline_data() {
        let evs = decode_all(&[b": keep-alive\r\n\r\ndata:a\r\ndata: b\r\rid: 7\nfoo\n\n"]);
        assert_eq!(evs.len(), 3);
        assert!(evs[0].is_comment_only());
        assert_eq!(&evs[1].data[..], b"a\nb");
        assert_eq!(evs[2].id.as_deref(), Some(&b"7"[..]));
    }

    #[test]
    fn lone_cr_at_chunk_end_waits_for_lf() {
        let evs = decode_all(&[b"data: x\r", b"\n\r", b"\n"]);
        assert_eq!(evs.len(), 1);
        assert_eq!(&evs[0].data[..], b"x");
        assert_eq!(&evs[0].raw[..], b"data: x\r\n\r\n");
    }

    #[test]
    fn unterminated_final_event_is_returned_by_finish() {
        let evs = decode_all(&[b"data: tail"]);
        assert_eq!(evs.len(), 1);
        assert_eq!(&evs[0].data[..], b"tail");
    }

    // Found by the `sse_decoder` fuzz target: a stream ending in a lone CR (a cut CRLF)
    // made `finish` index an empty line.
    #[test]
    fn finish_after_lone_cr_does_not_panic() {
        let evs = decode_all(&[b"\r"]);
        assert_eq!(evs.len(), 1);
        assert_eq!(&evs[0].raw[..], b"\r");
        assert!(!evs[0].has_data);

        let evs = decode_all(&[b"data: x\r\n\r"]);
        assert_eq!(evs.len(), 1);
        assert_eq!(&evs[0].data[..], b"x");
        assert_eq!(&evs[0].raw[..], b"data: x\r\n\r");

        let evs = decode_all(&[b"data: a\n\n", b"\r"]);
        assert_eq!(evs.len(), 2);
        assert_eq!(&evs[0].data[..], b"a");
        assert_eq!(&evs[1].raw[..], b"\r");
    }

    #[test]
    fn oversize_event_is_an_error() {
        let mut d = SseDecoder::with_max_event_bytes(8);
        d.push(b"data: 0123456789");
        assert_eq!(d.next_event(), Err(SseError::EventTooLarge(8)));
    }

    #[test]
    fn encode_splits_lines() {
        assert_eq!(
            &encode_event(Some("e"), b"a\nb")[..],
            b"event: e\ndata: a\ndata: b\n\n"
        );
    }

    proptest! {
        #[test]
        fn any_chunking_gives_the_same_events(
            datas in proptest::collection::vec("[a-z {}\":,]{0,40}", 1..8),
            cuts in proptest::collection::vec(0usize..400, 0..12),
            crlf in any::<bool>(),
        ) {
            let nl = if crlf { "\r\n" } else { "\n" };
            let mut stream = String::new();
            for (i, d) in datas.iter().enumerate() {
                stream.push_str(&format!("event: e{i}{nl}data: {d}{nl}{nl}"));
            }
            let bytes = stream.as_bytes();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut last = 0;
            for c in cuts { chunks.push(&bytes[last..c]); last = c; }
            chunks.push(&bytes[last..]);
            let evs = decode_all(&chunks);
            prop_assert_eq!(evs.len(), datas.len());
            let mut raw = Vec::new();
            for (e, d) in evs.iter().zip(&datas) {
                prop_assert_eq!(&e.data[..], d.as_bytes());
                raw.extend_from_slice(&e.raw);
            }
            prop_assert_eq!(raw, bytes.to_vec());
        }
    }
}
