//! Follows the client's WebSocket frames as their bytes arrive, before tungstenite has a whole
//! message, to apply the size rule early: a message may grow beyond `max_message_bytes` (1 MiB)
//! only if it is a `process_sync_batch` (up to `max_batch_bytes`, enforced by tungstenite), and
//! a batch must say so first: the message has to begin with `{"type":"process_sync_batch"`
//! (whitespace allowed), as every client of ours and every serde-tagged encoder writes it.
//! Without this, any message type could make the server buffer 8 MiB per socket.
//!
//! Client frames (RFC 6455 §5.2) are: a 2-byte header (FIN, RSV, opcode; MASK, 7-bit length),
//! a 16- or 64-bit extended length, a 4-byte mask key (always present from clients), then the
//! masked payload. Only the beginning of each data message is unmasked and kept (64 bytes).

/// What the tracker decided about the bytes it was fed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// A non-batch message grew beyond the small limit.
    TooBig,
    /// The bytes are not client WebSocket frames (unmasked, reserved bits, bad opcode …).
    Malformed,
}

/// How much of a data message is kept to recognise its type.
const PREFIX: usize = 64;

#[derive(Debug)]
enum State {
    Header { buf: [u8; 14], have: usize },
    Payload { left: u64, mask: [u8; 4], pos: u64, data: bool, fin: bool },
}

/// The frame state of one connection's incoming bytes.
#[derive(Debug)]
pub struct FrameTracker {
    state: State,
    small_limit: u64,
    /// Payload bytes of the data message being received.
    message: u64,
    prefix: Vec<u8>,
    failed: Option<Verdict>,
}

impl FrameTracker {
    pub fn new(small_limit: usize) -> Self {
        FrameTracker {
            state: State::Header { buf: [0; 14], have: 0 },
            small_limit: small_limit as u64,
            message: 0,
            prefix: Vec::with_capacity(PREFIX),
            failed: None,
        }
    }

    /// Feeds bytes as they were read from the socket.
    pub fn feed(&mut self, mut data: &[u8]) -> Verdict {
        if let Some(v) = self.failed {
            return v;
        }
        while !data.is_empty() {
            match &mut self.state {
                State::Header { buf, have } => {
                    buf[*have] = data[0];
                    *have += 1;
                    data = &data[1..];
                    match parse_header(&buf[..*have]) {
                        Header::NeedMore => {}
                        Header::Bad => return self.fail(Verdict::Malformed),
                        Header::Done { fin, opcode, len, mask } => {
                            let data_frame = opcode <= 2;
                            if data_frame && opcode != 0 {
                                // a new message (continuation frames have opcode 0)
                                self.message = 0;
                                self.prefix.clear();
                            }
                            self.state = State::Payload { left: len, mask, pos: 0, data: data_frame, fin };
                            if len == 0 {
                                self.end_of_frame();
                            }
                        }
                    }
                }
                State::Payload { left, mask, pos, data: is_data, .. } => {
                    let n = (*left).min(data.len() as u64) as usize;
                    if *is_data {
                        let room = PREFIX.saturating_sub(self.prefix.len()).min(n);
                        for (i, b) in data[..room].iter().enumerate() {
                            self.prefix.push(b ^ mask[((*pos + i as u64) % 4) as usize]);
                        }
                        self.message += n as u64;
                    }
                    *left -= n as u64;
                    *pos += n as u64;
                    data = &data[n..];
                    let done = *left == 0;
                    if *is_data && self.message > self.small_limit && !self.is_batch() {
                        return self.fail(Verdict::TooBig);
                    }
                    if done {
                        self.end_of_frame();
                    }
                }
            }
        }
        Verdict::Ok
    }

    fn end_of_frame(&mut self) {
        if let State::Payload { data: true, fin: true, .. } = self.state {
            self.message = 0;
            self.prefix.clear();
        }
        self.state = State::Header { buf: [0; 14], have: 0 };
    }

    fn fail(&mut self, v: Verdict) -> Verdict {
        self.failed = Some(v);
        v
    }

    /// Whether the message begins `{"type":"process_sync_batch"` (ignoring whitespace).
    fn is_batch(&self) -> bool {
        let compact: Vec<u8> = self.prefix.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
        compact.starts_with(br#"{"type":"process_sync_batch""#)
    }
}

enum Header {
    NeedMore,
    Bad,
    Done { fin: bool, opcode: u8, len: u64, mask: [u8; 4] },
}

fn parse_header(b: &[u8]) -> Header {
    if b.len() < 2 {
        return Header::NeedMore;
    }
    let (fin, rsv, opcode) = (b[0] & 0x80 != 0, b[0] & 0x70, b[0] & 0x0f);
    let (masked, len7) = (b[1] & 0x80 != 0, b[1] & 0x7f);
    let control = opcode >= 8;
    if rsv != 0 || !masked || !matches!(opcode, 0 | 1 | 2 | 8 | 9 | 10) || (control && (!fin || len7 > 125)) {
        return Header::Bad;
    }
    let ext = match len7 {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let total = 2 + ext + 4;
    if b.len() < total {
        return Header::NeedMore;
    }
    let len = match ext {
        2 => u64::from(u16::from_be_bytes([b[2], b[3]])),
        8 => u64::from_be_bytes(b[2..10].try_into().expect("8 bytes")),
        _ => u64::from(len7),
    };
    let mask = b[2 + ext..total].try_into().expect("4 bytes");
    Header::Done { fin, opcode, len, mask }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame.
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut f = vec![(if fin { 0x80 } else { 0 }) | opcode];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n < 65536 => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    fn feed_bytewise(t: &mut FrameTracker, bytes: &[u8], chunk: usize) -> Verdict {
        let mut v = Verdict::Ok;
        for c in bytes.chunks(chunk) {
            v = t.feed(c);
            if v != Verdict::Ok {
                break;
            }
        }
        v
    }

    #[test]
    fn small_messages_of_any_type_and_large_batches_pass() {
        let mut t = FrameTracker::new(1000);
        let ping = frame(true, 1, br#"{"type":"ping","timestamp":1}"#);
        let mut batch = br#"{ "type" : "process_sync_batch", "entries": ["#.to_vec();
        batch.extend(std::iter::repeat_n(b' ', 5000));
        batch.extend_from_slice(b"]}");
        for chunk in [1, 7, 4096] {
            assert_eq!(feed_bytewise(&mut t, &ping, chunk), Verdict::Ok);
            assert_eq!(feed_bytewise(&mut t, &frame(true, 1, &batch), chunk), Verdict::Ok);
            assert_eq!(feed_bytewise(&mut t, &frame(true, 9, b"hi"), chunk), Verdict::Ok, "control frames");
        }
    }

    #[test]
    fn a_large_message_that_is_not_a_batch_is_refused_early() {
        let mut big = br#"{"type":"ping","timestamp":""#.to_vec();
        big.extend(std::iter::repeat_n(b'x', 5000));
        let f = frame(true, 1, &big);
        let mut t = FrameTracker::new(1000);
        // refused after about 1000 bytes, not at the end of the 5000
        assert_eq!(t.feed(&f[..1100]), Verdict::TooBig);
        assert_eq!(t.feed(b"more"), Verdict::TooBig, "stays refused");
        // fragmented: the type is in the first fragment, the size comes later
        let mut t = FrameTracker::new(1000);
        let mut bytes = frame(false, 1, &big[..600]);
        bytes.extend(frame(true, 9, b"ping in between"));
        bytes.extend(frame(false, 0, &big[600..1200]));
        assert_eq!(t.feed(&bytes), Verdict::TooBig);
    }

    #[test]
    fn bytes_that_are_not_client_frames_are_malformed() {
        let mut unmasked = frame(true, 1, b"{}");
        unmasked[1] &= 0x7f;
        assert_eq!(FrameTracker::new(1000).feed(&unmasked), Verdict::Malformed);
        assert_eq!(FrameTracker::new(1000).feed(b"GET / HTTP/1.1\r\n"), Verdict::Malformed);
        let mut t = FrameTracker::new(1000);
        assert_eq!(t.feed(&frame(true, 1, b"{}")), Verdict::Ok);
        assert_eq!(t.feed(&[0x83, 0x80]), Verdict::Malformed, "reserved opcode");
    }
}
