//! Follows each request's framing on the raw byte stream, to refuse the
//! chunk lines hyper's decoder takes but RFC 9112 does not.
//!
//! hyper 1.x decodes chunked bodies itself and has no strictness knob. It
//! takes spaces or tabs between a chunk size and its CRLF (`5 \r\n`: the
//! grammar allows whitespace only before a `;`) and any byte but CR and LF
//! in a chunk extension (a NUL, a control character). Both are harmless to
//! hyper but are the kind of leniency that lets a front proxy and Siesta
//! disagree about where a body ends, so Siesta refuses them. So is a bare
//! LF in the trailer section: hyper reads trailers up to CRLF CRLF, but
//! httparse then ends them at the bare LF's empty line and the bytes in
//! between (a pipelined request) vanish unanswered. So is a trailer field
//! that would change framing or routing (`Content-Length`, `Host`: the list
//! is `wsgi/trailers.rs`'s), here on the byte stream so that it fails the
//! body whether the app reads it or the server discards it.
//!
//! `Framing` reads every byte hyper reads, before hyper does (`head_clock`
//! `ClockedIo` feeds it): it finds the end of each head as httparse does
//! (bare LF line ends, leading empty lines), takes the body length from
//! `Content-Length` or `Transfer-Encoding` as hyper does, skips the body or
//! walks its chunk lines, and starts over at the next head. A chunk line
//! that breaks the grammar (`chunk-size [ chunk-ext ] CRLF`,
//! `chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] )`)
//! stops the stream there: hyper gets the bytes before it, then an
//! `InvalidData` error, which `wsgi.input` reports as a malformed body (400,
//! connection closed). A head hyper refuses closes the connection anyway,
//! so a head `Framing` cannot follow just ends its watch (`Opaque`): it
//! never refuses what hyper would frame differently. That rests on hyper
//! 1.12's request framing (`proto/h1/role.rs`: TE wins, Content-Length is
//! plain digits and repeats only identically, anything else is refused);
//! `props` below models it, so check both when hyper's minor version moves.

/// Where the stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before a request line (empty lines are skipped, as httparse does).
    Start,
    /// Inside the request line.
    RequestLine,
    /// At the start of a field line, or of the empty line ending the head.
    LineStart,
    /// CR of the empty line seen.
    HeadCr,
    /// Inside a field name (`name_len` bytes so far).
    Name,
    /// Inside a field value.
    Value,
    /// Inside a `Content-Length`-framed body: bytes left.
    Length(u64),
    /// At the first digit of a chunk size.
    SizeStart,
    /// Inside a chunk size.
    Size,
    /// Spaces or tabs after a chunk size: only more, or `;`, may follow.
    SizeBws,
    /// After `;` (and BWS): an extension name must start.
    ExtName {
        started: bool,
    },
    /// Spaces or tabs after an extension name.
    ExtNameBws,
    /// After `=` (and BWS): a value must start.
    ExtValStart,
    /// Inside a token value.
    ExtToken,
    /// Inside a quoted-string value.
    ExtQuoted,
    /// After a backslash inside a quoted string.
    ExtEscape,
    /// After a quoted-string value.
    ExtValEnd,
    /// Spaces or tabs after a value: only more, or `;`, may follow.
    ExtValBws,
    /// CR ending a chunk line seen.
    SizeLf,
    /// Inside chunk data: bytes left.
    Data(u64),
    /// After chunk data: CR, then LF.
    DataCr,
    DataLf,
    /// After the last chunk line: a trailer field, or the final CRLF.
    TrailerStart,
    /// Inside a trailer field's name.
    TrailerName,
    /// Inside a trailer field's value.
    Trailer,
    /// CR ending a trailer field line seen.
    TrailerLf,
    /// CR of the final empty line seen.
    EndLf,
    /// The stream broke the chunk grammar: nothing more goes to hyper.
    Broken,
    /// A head this cannot follow: hyper refuses it and closes.
    Opaque,
}

/// The field whose value is being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    ContentLength,
    TransferEncoding,
    Other,
}

/// How the body of the head being read is framed, so far.
#[derive(Debug, Clone, Copy, Default)]
struct HeadFraming {
    chunked: bool,
    /// A `Content-Length` gave `length` (two fields, not an `Option`: this
    /// lives as long as its connection, and the tag would take 8 bytes).
    has_length: bool,
    length: u64,
    /// A `Content-Length` that is not plain digits, or two that differ:
    /// hyper refuses the head.
    bad_length: bool,
    /// The first `Content-Length`, before any `Transfer-Encoding`, is
    /// beyond `MAX_LENGTH`: hyper refuses the head as too large.
    huge: bool,
}

/// The largest `Content-Length` hyper 1.x frames a body by (its
/// `DecodedLength` keeps the two values above for chunked and
/// close-delimited bodies).
const MAX_LENGTH: u64 = u64::MAX - 2;

/// The longest field name compared (`transfer-encoding`).
const NAME_MAX: usize = 17;

/// No offset in a feed (offsets are kept in 32 bits: a feed is one read,
/// at most the head buffer).
const NOWHERE: u32 = u32::MAX;

/// An offset in a feed, in 32 bits (`NOWHERE` past them: never so).
fn offset(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(NOWHERE)
}

/// One connection's framing follower.
#[derive(Debug, Clone)]
pub(crate) struct Framing {
    state: State,
    name: [u8; NAME_MAX],
    /// The name's length so far (saturating: past `NAME_MAX` it is no name compared).
    name_len: u8,
    field: Field,
    /// The digits of the current `Content-Length` value, if `digits`.
    value: u64,
    digits: bool,
    /// Whitespace came after those digits.
    value_ended: bool,
    value_bad: bool,
    head: HeadFraming,
    /// The current chunk's size.
    chunk: u64,
    /// Request lines begun so far.
    heads: u64,
    /// Bytes of the request line being read so far (with the empty lines
    /// before it, which hyper buffers too), saturating.
    line: u32,
    /// A request line of this many bytes cannot be parsed by hyper.
    line_max: u32,
    /// The number of the first head (counted like `heads`, so never 0)
    /// whose request line reached `line_max`, until taken; 0 when none.
    overlong: u64,
    /// The marked line was empty lines alone so far (no request line
    /// begun): a malformed head (400), not a long target (414).
    overlong_blank: bool,
    /// Field lines begun in the head being read, saturating.
    fields: u32,
    /// More field lines than this in a head is more than
    /// `--limit-request-fields` allows.
    fields_max: u32,
    /// The number of the first head (counted like `heads`) with more than
    /// `fields_max` field lines; 0 when none.
    crowded: u64,
    /// The last head's `Content-Length` is beyond `MAX_LENGTH`, until
    /// taken. That head is `heads`: the stream is `Opaque` past it.
    huge: bool,
    /// Where the request line being read began in the bytes of this `feed`
    /// (`None`: in an earlier one).
    line_from: Option<u32>,
    /// The request lines begun and ended within the bytes of the last
    /// `feed` that hold a byte above ASCII (without their LF), with their
    /// head's number.
    high_lines: Vec<(std::ops::Range<usize>, u64)>,
    /// Where, in the bytes of the last `feed`, the LF is that ended a
    /// request line begun in an earlier one (`NOWHERE`: none did), and
    /// its head's number.
    continued_at: u32,
    continued_head: u64,
    /// The first head since the last `take_fragment` whose request line
    /// holds a `#`, as how many heads before `heads` it is, plus one (0:
    /// none; a u32, as every byte here is one per idle connection: S8). A
    /// later one is not kept: that head's refusal closes the connection.
    fragment_back: u32,
}

impl Default for Framing {
    fn default() -> Self {
        Framing {
            state: State::Start,
            name: [0; NAME_MAX],
            name_len: 0,
            field: Field::Other,
            value: 0,
            digits: false,
            value_ended: false,
            value_bad: false,
            head: HeadFraming::default(),
            chunk: 0,
            heads: 0,
            line: 0,
            line_max: u32::MAX,
            overlong: 0,
            overlong_blank: false,
            fields: 0,
            fields_max: u32::MAX,
            crowded: 0,
            huge: false,
            line_from: None,
            high_lines: Vec::new(),
            continued_at: NOWHERE,
            continued_head: 0,
            fragment_back: 0,
        }
    }
}

/// A chunk line that breaks RFC 9112 §7.1, at this offset of the bytes fed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BadChunk(pub(crate) usize);

pub(super) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_bws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// `qdtext` and the bytes a backslash may quote (HTAB, SP, VCHAR, obs-text).
fn is_quotable(b: u8) -> bool {
    b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80
}

fn hex(b: u8) -> Option<u64> {
    (b as char).to_digit(16).map(u64::from)
}

impl Framing {
    /// A follower that marks request lines of `line_max` bytes or more
    /// (`take_overlong`) and heads of more than `fields_max` field lines
    /// (`crowded`).
    pub(crate) fn with_limits(line_max: usize, fields_max: usize) -> Self {
        Framing {
            line_max: u32::try_from(line_max).unwrap_or(u32::MAX),
            fields_max: u32::try_from(fields_max).unwrap_or(u32::MAX),
            ..Framing::default()
        }
    }

    /// The number of the first head that had more than `fields_max` field
    /// lines in the bytes fed so far, if one did (hyper refuses it as too
    /// large, without saying why).
    pub(crate) fn crowded(&self) -> Option<u64> {
        (self.crowded != 0).then_some(self.crowded)
    }

    /// The number of the head, if one ended in the bytes fed since the
    /// last call, whose `Content-Length` is more than hyper frames a body
    /// by (it would refuse the head as too large, with a 431). Nothing is
    /// followed past it.
    pub(crate) fn take_huge(&mut self) -> Option<u64> {
        std::mem::take(&mut self.huge).then_some(self.heads)
    }

    /// The number of the head (1 for a connection's first) whose request
    /// line reached `line_max` in the bytes fed so far, if one did since
    /// the last call. Its head may have been fed whole, or only in part.
    /// A line still being read past the bound is marked again by each
    /// later feed of its bytes.
    pub(crate) fn take_overlong(&mut self) -> Option<u64> {
        (self.overlong != 0).then(|| std::mem::take(&mut self.overlong))
    }

    /// Whether the line `take_overlong` gave was empty lines alone when it
    /// reached the bound (RFC 9112 §2.2 lets a server skip a few; thousands
    /// of them are no request line, so no 414 either).
    pub(crate) fn overlong_was_blank(&self) -> bool {
        self.overlong_blank
    }

    /// The request lines begun and ended within the bytes of the last
    /// `feed` that hold a byte above ASCII, as ranges of those bytes
    /// (without the LF), with their head's number (counted like `heads`).
    /// A line split over two feeds is not among them.
    pub(crate) fn high_lines(&self) -> &[(std::ops::Range<usize>, u64)] {
        &self.high_lines
    }

    /// Where the LF is, in the bytes of the last `feed`, that ended a
    /// request line begun in an earlier one, and its head's number.
    pub(crate) fn continued_end(&self) -> Option<(usize, u64)> {
        (self.continued_at != NOWHERE).then_some((self.continued_at as usize, self.continued_head))
    }

    /// The head whose request line held a `#` in the bytes fed since the
    /// last call, by number. A `#fragment` is no part of a request target
    /// (RFC 9112 §3.2), and hyper's URI parser drops it silently: the app
    /// would see `/a` for `/a#/../b?x=1`, and `--limit-request-line` would
    /// not count it. A method with one is refused as well (`BadMethod`).
    /// (The first only, since the last call: that head's refusal closes
    /// the connection, so none after it is served.)
    pub(crate) fn take_fragment(&mut self) -> Option<u64> {
        let back = std::mem::take(&mut self.fragment_back);
        (back != 0).then(|| self.heads - u64::from(back - 1))
    }

    /// The length from which a request line is marked (`take_overlong`).
    pub(crate) fn line_max(&self) -> usize {
        self.line_max as usize
    }

    /// The request line being read has reached `line_max` bytes.
    pub(crate) fn line_past_max(&self) -> bool {
        self.line >= self.line_max
    }

    /// The bytes of the last `feed` end inside a request line: `Some` with
    /// where it began in them, `Some(None)` when it began in an earlier one.
    pub(crate) fn open_line(&self) -> Option<Option<usize>> {
        (self.state == State::RequestLine).then_some(self.line_from.map(|at| at as usize))
    }

    /// Counts `n` more bytes of a request line (or of the empty lines
    /// before one, which belong to the next head).
    fn line_bytes(&mut self, n: usize) {
        self.line = self
            .line
            .saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
        if self.line >= self.line_max && self.overlong == 0 {
            self.overlong = self.heads + u64::from(self.state == State::Start);
            self.overlong_blank = self.state == State::Start;
        }
    }

    /// A chunk line broke the grammar: the stream ends in an error.
    pub(crate) fn broken(&self) -> bool {
        self.state == State::Broken
    }

    /// How many request lines have begun: a new one means the next head's
    /// first byte came (body bytes and empty lines do not count). Past a
    /// head it cannot follow (`Opaque`) it no longer knows, and says so.
    pub(crate) fn heads(&self) -> Option<u64> {
        (self.state != State::Opaque).then_some(self.heads)
    }

    /// How many requests, head and body, the bytes so far hold in whole;
    /// `None` past a head it cannot follow or a chunk line that broke.
    pub(crate) fn read_through(&self) -> Option<u64> {
        match self.state {
            State::Opaque | State::Broken => None,
            State::Start => Some(self.heads),
            _ => Some(self.heads.saturating_sub(1)),
        }
    }

    /// Inside a request head (past its first byte, before its end).
    pub(crate) fn in_head(&self) -> bool {
        matches!(
            self.state,
            State::RequestLine | State::LineStart | State::HeadCr | State::Name | State::Value
        )
    }

    /// Inside a request body: the client still owes some of it (or, past a
    /// head this cannot follow or a chunk line that broke, it may).
    pub(crate) fn in_body(&self) -> bool {
        self.state != State::Start && !self.in_head()
    }

    /// Follows `bytes`, the next bytes of the stream; `Err` gives the
    /// offset of the first byte that breaks a chunk line (then every later
    /// call fails at 0).
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Result<(), BadChunk> {
        let mut i = 0;
        self.line_from = None;
        self.high_lines.clear();
        self.continued_at = NOWHERE;
        while i < bytes.len() {
            match self.state {
                State::Opaque => return Ok(()),
                State::Broken => return Err(BadChunk(i)),
                // Runs of bytes with nothing to look at inside are skipped whole.
                State::Length(left) | State::Data(left) => {
                    let n = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(bytes.len() - i);
                    let left = left - n as u64;
                    i += n;
                    self.state = match (self.state, left) {
                        (State::Length(_), 0) => State::Start,
                        (State::Length(_), _) => State::Length(left),
                        (_, 0) => State::DataCr,
                        _ => State::Data(left),
                    };
                }
                // A field name up to its colon (or a line's end) at once: only
                // its first `NAME_MAX` bytes are ever compared.
                State::Name => {
                    let stop = memchr::memchr2(b':', b'\n', &bytes[i..]);
                    let run = stop.unwrap_or(bytes.len() - i);
                    self.push_names(&bytes[i..i + run]);
                    i += run;
                    if stop.is_some() {
                        self.step(bytes[i]);
                        i += 1;
                    }
                }
                // Only a `Content-Length` value is read byte by byte.
                State::RequestLine | State::Value | State::Trailer
                    if self.state != State::Value || self.field != Field::ContentLength =>
                {
                    let line = self.state == State::RequestLine;
                    // A trailer line ends at its CR; an LF before it is refused.
                    let stop = if self.state == State::Trailer {
                        memchr::memchr2(b'\n', b'\r', &bytes[i..])
                    } else if line && self.fragment_back == 0 {
                        // Its end, and a `#` before it, in one search.
                        match memchr::memchr2(b'\n', b'#', &bytes[i..]) {
                            Some(at) if bytes[i + at] == b'#' => {
                                self.fragment_back = 1;
                                memchr::memchr(b'\n', &bytes[i + at..]).map(|end| at + end)
                            }
                            end => end,
                        }
                    } else {
                        memchr::memchr(b'\n', &bytes[i..])
                    };
                    match stop {
                        Some(at) => {
                            if line {
                                self.line_bytes(at + 1);
                                match self.line_from.take().map(|from| from as usize) {
                                    Some(from) => {
                                        if !bytes[from..i + at].is_ascii() {
                                            self.high_lines.push((from..i + at, self.heads));
                                        }
                                    }
                                    None => {
                                        self.continued_at = offset(i + at);
                                        self.continued_head = self.heads;
                                    }
                                }
                            }
                            i += at;
                            self.step(bytes[i]);
                            if self.state == State::Broken {
                                return Err(BadChunk(i));
                            }
                            i += 1;
                        }
                        None => {
                            if line {
                                self.line_bytes(bytes.len() - i);
                            }
                            i = bytes.len();
                        }
                    }
                }
                _ => {
                    let before = self.state;
                    self.step(bytes[i]);
                    match self.state {
                        State::Broken => return Err(BadChunk(i)),
                        State::RequestLine if before == State::Start => {
                            self.line_from = Some(offset(i));
                        }
                        _ => {}
                    }
                    i += 1;
                }
            }
        }
        Ok(())
    }

    /// One byte.
    fn step(&mut self, b: u8) {
        use State::*;
        self.state = match self.state {
            Start => {
                self.line_bytes(1);
                match b {
                    b'\r' | b'\n' => Start,
                    _ => {
                        self.heads += 1;
                        self.fields = 0;
                        if self.fragment_back != 0 {
                            self.fragment_back = self.fragment_back.saturating_add(1);
                        }
                        RequestLine
                    }
                }
            }
            RequestLine => match b {
                b'\n' => LineStart,
                _ => RequestLine,
            },
            LineStart => match b {
                b'\r' => HeadCr,
                b'\n' => self.head_end(),
                _ => {
                    self.fields = self.fields.saturating_add(1);
                    if self.fields > self.fields_max && self.crowded == 0 {
                        self.crowded = self.heads;
                    }
                    self.name_len = 0;
                    self.push_name(b);
                    Name
                }
            },
            HeadCr => match b {
                b'\n' => self.head_end(),
                _ => Opaque,
            },
            Name => match b {
                b':' => {
                    self.field = self.field_named();
                    self.value = 0;
                    self.digits = false;
                    self.value_ended = false;
                    self.value_bad = false;
                    Value
                }
                b'\n' => Opaque,
                _ => {
                    self.push_name(b);
                    Name
                }
            },
            Value => match b {
                b'\n' => {
                    self.field_end();
                    LineStart
                }
                _ => {
                    if self.field == Field::ContentLength {
                        self.length_byte(b);
                    }
                    Value
                }
            },
            Length(_) | Data(_) | Broken | Opaque => self.state,
            SizeStart => match hex(b) {
                Some(d) => {
                    self.chunk = d;
                    Size
                }
                None => Broken,
            },
            Size => match b {
                b';' => ExtName { started: false },
                b'\r' => SizeLf,
                _ if is_bws(b) => SizeBws,
                _ => match hex(b).and_then(|d| self.chunk.checked_mul(16)?.checked_add(d)) {
                    Some(size) => {
                        self.chunk = size;
                        Size
                    }
                    None => Broken,
                },
            },
            SizeBws => match b {
                b';' => ExtName { started: false },
                _ if is_bws(b) => SizeBws,
                _ => Broken,
            },
            ExtName { started: false } => match b {
                _ if is_bws(b) => ExtName { started: false },
                _ if is_tchar(b) => ExtName { started: true },
                _ => Broken,
            },
            ExtName { started: true } => match b {
                b'=' => ExtValStart,
                b';' => ExtName { started: false },
                b'\r' => SizeLf,
                _ if is_tchar(b) => ExtName { started: true },
                _ if is_bws(b) => ExtNameBws,
                _ => Broken,
            },
            ExtNameBws => match b {
                b'=' => ExtValStart,
                b';' => ExtName { started: false },
                _ if is_bws(b) => ExtNameBws,
                _ => Broken,
            },
            ExtValStart => match b {
                b'"' => ExtQuoted,
                _ if is_bws(b) => ExtValStart,
                _ if is_tchar(b) => ExtToken,
                _ => Broken,
            },
            ExtToken if is_tchar(b) => ExtToken,
            ExtQuoted => match b {
                b'"' => ExtValEnd,
                b'\\' => ExtEscape,
                _ if is_quotable(b) => ExtQuoted,
                _ => Broken,
            },
            ExtEscape => match b {
                _ if is_quotable(b) => ExtQuoted,
                _ => Broken,
            },
            // The end of a value: a token's first non-token byte, or after a quote.
            ExtToken | ExtValEnd => match b {
                b';' => ExtName { started: false },
                b'\r' => SizeLf,
                _ if is_bws(b) => ExtValBws,
                _ => Broken,
            },
            ExtValBws => match b {
                b';' => ExtName { started: false },
                _ if is_bws(b) => ExtValBws,
                _ => Broken,
            },
            SizeLf => match (b, self.chunk) {
                (b'\n', 0) => TrailerStart,
                (b'\n', size) => Data(size),
                _ => Broken,
            },
            DataCr => match b {
                b'\r' => DataLf,
                _ => Broken,
            },
            DataLf => match b {
                b'\n' => SizeStart,
                _ => Broken,
            },
            // hyper ends trailers only at CRLF CRLF, while httparse ends
            // them at a bare LF's empty line and drops what follows: a bare
            // LF here would let a request after it vanish into the trailers.
            TrailerStart => match b {
                b'\r' => EndLf,
                b'\n' => Broken,
                _ => {
                    self.name_len = 0;
                    self.push_name(b);
                    TrailerName
                }
            },
            TrailerName => match b {
                b':' if self.forbidden_trailer() => Broken,
                b':' => Trailer,
                b'\r' => TrailerLf,
                b'\n' => Broken,
                _ => {
                    self.push_name(b);
                    TrailerName
                }
            },
            Trailer => match b {
                b'\r' => TrailerLf,
                b'\n' => Broken,
                _ => Trailer,
            },
            TrailerLf => match b {
                b'\n' => TrailerStart,
                _ => Broken,
            },
            EndLf => match b {
                b'\n' => Start,
                _ => Broken,
            },
        };
    }

    /// `push_name` for each of `run`.
    fn push_names(&mut self, run: &[u8]) {
        let len = usize::from(self.name_len);
        if len < NAME_MAX {
            let take = run.len().min(NAME_MAX - len);
            for (to, b) in self.name[len..len + take].iter_mut().zip(run) {
                *to = b.to_ascii_lowercase();
            }
        }
        let run = u8::try_from(run.len()).unwrap_or(u8::MAX);
        self.name_len = self.name_len.saturating_add(run);
    }

    fn push_name(&mut self, b: u8) {
        let len = usize::from(self.name_len);
        if len < NAME_MAX {
            self.name[len] = b.to_ascii_lowercase();
        }
        self.name_len = self.name_len.saturating_add(1);
    }

    /// The trailer field just named may not come in a trailer.
    fn forbidden_trailer(&self) -> bool {
        let len = usize::from(self.name_len);
        len <= NAME_MAX && crate::wsgi::trailers::FORBIDDEN.contains(&&self.name[..len])
    }

    fn field_named(&self) -> Field {
        let len = usize::from(self.name_len);
        match &self.name[..len.min(NAME_MAX)] {
            _ if len > NAME_MAX => Field::Other,
            b"content-length" => Field::ContentLength,
            b"transfer-encoding" => Field::TransferEncoding,
            _ => Field::Other,
        }
    }

    /// A byte of a `Content-Length` value: digits, with whitespace around
    /// (httparse trims it) and nothing else.
    fn length_byte(&mut self, b: u8) {
        match b {
            b'0'..=b'9' if !self.value_bad => {
                let digit = u64::from(b - b'0');
                match self
                    .value
                    .checked_mul(10)
                    .and_then(|v| v.checked_add(digit))
                {
                    // A digit after trailing whitespace ("1 2") is not a number.
                    Some(v) if !self.value_ended => {
                        self.value = v;
                        self.digits = true;
                    }
                    _ => self.value_bad = true,
                }
            }
            b' ' | b'\t' | b'\r' => self.value_ended = self.digits,
            _ => self.value_bad = true,
        }
    }

    fn field_end(&mut self) {
        match self.field {
            Field::TransferEncoding => self.head.chunked = true,
            Field::ContentLength => match (
                self.digits.then_some(self.value),
                self.value_bad,
                self.head.has_length.then_some(self.head.length),
            ) {
                (Some(v), false, None) => {
                    self.head.length = v;
                    self.head.has_length = true;
                    // hyper reads the fields in order and refuses this one
                    // at once, unless a Transfer-Encoding came first (it
                    // then skips every Content-Length) or a malformed
                    // Content-Length did (refused as that, 400).
                    self.head.huge = v > MAX_LENGTH && !self.head.chunked && !self.head.bad_length;
                }
                (Some(v), false, Some(prev)) if v == prev => {}
                _ => self.head.bad_length = true,
            },
            Field::Other => {}
        }
        self.field = Field::Other;
        self.name_len = 0;
    }

    /// The empty line ending a head: what its body is.
    fn head_end(&mut self) -> State {
        self.line = 0;
        let head = std::mem::take(&mut self.head);
        if head.huge {
            self.huge = true;
            State::Opaque
        } else if head.chunked {
            State::SizeStart
        } else if head.bad_length {
            State::Opaque
        } else {
            match head.has_length.then_some(head.length) {
                Some(n) if n > 0 => State::Length(n),
                _ => State::Start,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &[u8] = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";

    #[test]
    fn marks_a_length_hyper_cannot_frame() {
        let post = |fields: &str| format!("POST / HTTP/1.1\r\nHost: x\r\n{fields}\r\n");
        let cases = [
            // The largest length hyper takes: a body follows.
            ("Content-Length: 18446744073709551613\r\n", None),
            ("Content-Length: 18446744073709551614\r\n", Some(1)),
            ("Content-Length: 18446744073709551615\r\n", Some(1)),
            // Past u64: not a number (hyper: invalid, 400).
            ("Content-Length: 18446744073709551616\r\n", None),
            // hyper skips a Content-Length after a Transfer-Encoding...
            (
                "Transfer-Encoding: chunked\r\nContent-Length: 18446744073709551614\r\n",
                None,
            ),
            // ...but refuses one before it at once.
            (
                "Content-Length: 18446744073709551614\r\nTransfer-Encoding: chunked\r\n",
                Some(1),
            ),
            // A second, differing one is refused as invalid (400)...
            (
                "Content-Length: 5\r\nContent-Length: 18446744073709551614\r\n",
                None,
            ),
            // ...and so is a malformed one before it...
            (
                "Content-Length: x\r\nContent-Length: 18446744073709551614\r\n",
                None,
            ),
            (
                "Content-Length:\r\nContent-Length: 18446744073709551614\r\n",
                None,
            ),
            // ...but one after it comes too late.
            (
                "Content-Length: 18446744073709551614\r\nContent-Length: x\r\n",
                Some(1),
            ),
        ];
        for (fields, huge) in cases {
            let mut f = Framing::default();
            assert!(f.feed(post(fields).as_bytes()).is_ok(), "{fields:?}");
            assert_eq!(f.take_huge(), huge, "{fields:?}");
            assert_eq!(f.take_huge(), None, "taken: {fields:?}");
            if huge.is_some() {
                assert_eq!(f.heads(), None, "hyper refuses it and closes: {fields:?}");
            }
        }
        // Behind another head, in pieces: its own number, once it ends.
        let mut f = Framing::default();
        assert!(f
            .feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nPOST / HTTP/1.1\r\nContent-Le")
            .is_ok());
        assert!(f.feed(b"ngth: 18446744073709551615\r\n").is_ok());
        assert_eq!(f.take_huge(), None, "the head has not ended");
        assert!(f.feed(b"\r\n").is_ok());
        assert_eq!(f.take_huge(), Some(2));
    }

    #[test]
    fn marks_the_request_lines_with_a_fragment() {
        let mut f = Framing::default();
        assert_eq!(f.feed(b"GET /a HTTP/1.1\r\nX-A: #1\r\n\r\nGET /b#"), Ok(()));
        assert_eq!(f.take_fragment(), Some(2), "not a field value's");
        assert_eq!(f.feed(b"c HTTP/1.1\r\n\r\nPOST /d HTTP/1.1\r\n"), Ok(()));
        assert_eq!(f.take_fragment(), None, "taken");
        assert_eq!(f.feed(b"Content-Length: 3\r\n\r\n#x#GET /e?f"), Ok(()));
        assert_eq!(f.take_fragment(), None, "a body's bytes");
        assert_eq!(f.feed(b"#g#h HTTP/1.1\r\n"), Ok(()));
        assert_eq!(f.take_fragment(), Some(4), "over two feeds");
        // Heads begun after it in the same feed leave it its number.
        assert_eq!(
            f.feed(b"\r\nGET /#i HTTP/1.1\r\n\r\nGET /j HTTP/1.1\r\n\r\nGET /k#"),
            Ok(())
        );
        assert_eq!(f.take_fragment(), Some(5));
    }

    #[test]
    fn counts_request_lines_not_body_bytes_or_empty_lines() {
        let mut f = Framing::default();
        assert_eq!(f.heads(), Some(0));
        assert!(f.feed(b"\r\n").is_ok());
        assert_eq!(f.heads(), Some(0), "an empty line is not a head");
        assert!(f
            .feed(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab")
            .is_ok());
        assert_eq!(f.heads(), Some(1));
        assert!(f.feed(b"cde").is_ok());
        assert_eq!(f.heads(), Some(1), "body bytes are not a head");
        assert!(!f.in_head());
        assert!(f.feed(b"G").is_ok());
        assert_eq!(f.heads(), Some(2));
        assert!(f.in_head());
        assert!(f
            .feed(b"ET / HTTP/1.1\r\nContent-Length: x\r\n\r\n")
            .is_ok());
        assert_eq!(f.heads(), None, "past a head it cannot follow");
    }

    #[test]
    fn marks_the_first_head_with_more_field_lines_than_the_bound() {
        let head = |fields: usize| {
            let lines: Vec<u8> = (0..fields)
                .flat_map(|i| format!("X-{i}: 1\r\n").into_bytes())
                .collect();
            [b"GET / HTTP/1.1\r\n".as_slice(), &lines, b"\r\n"].concat()
        };
        let body = b"POST / HTTP/1.1\r\nContent-Length: 12\r\n\r\nA: 1\r\nB: 1\r\n";
        for (bytes, mark) in [
            (head(3), None),
            (head(4), Some(1)),
            // Counted per head, not per connection; a body's lines are none.
            ([head(3), head(3)].concat(), None),
            ([head(3), head(5), head(9)].concat(), Some(2)),
            ([body.as_slice(), &head(2)].concat(), None),
            // Still known once a later head began.
            ([head(5), head(1)].concat(), Some(1)),
            // Known as soon as the line past the bound begins.
            (head(4)[..head(3).len() - 1].to_vec(), Some(1)),
        ] {
            for k in 0..=bytes.len() {
                let mut f = Framing::with_limits(usize::MAX, 3);
                assert!(f.feed(&bytes[..k]).is_ok());
                assert!(f.feed(&bytes[k..]).is_ok());
                assert_eq!(f.crowded(), mark, "split at {k}");
            }
        }
    }

    #[test]
    fn marks_the_head_whose_request_line_reaches_the_bound() {
        let line = |n: usize| [b"GET /".as_slice(), &vec![b'a'; n - 5]].concat();
        // Fed whole or in parts, ended or not: the same mark.
        for (bytes, mark) in [
            (line(99), None),
            (line(100), Some(1)),
            (
                [&line(100)[..], b" HTTP/1.1\r\nHost: x\r\n\r\n"].concat(),
                Some(1),
            ),
            ([b"\r\n\r\n".as_slice(), &line(96)].concat(), Some(1)),
            (
                [
                    b"GET / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc".as_slice(),
                    &line(100),
                ]
                .concat(),
                Some(2),
            ),
            (
                [
                    b"GET / HTTP/1.1\r\nContent-Length: 99\r\n\r\n".as_slice(),
                    &[b'a'; 99],
                ]
                .concat(),
                None,
            ),
        ] {
            for k in 0..=bytes.len() {
                let mut f = Framing::with_limits(100, usize::MAX);
                assert!(f.feed(&bytes[..k]).is_ok());
                let first = f.take_overlong();
                assert!(f.feed(&bytes[k..]).is_ok());
                assert_eq!(first.or(f.take_overlong()), mark, "split at {k}");
                assert_eq!(f.take_overlong(), None, "taken once");
            }
        }
    }

    #[test]
    fn a_bound_reached_by_empty_lines_alone_is_told_apart() {
        let blank = b"\r\n".repeat(60);
        let mut f = Framing::with_limits(100, usize::MAX);
        assert!(f.feed(&blank).is_ok());
        assert_eq!(f.take_overlong(), Some(1));
        assert!(f.overlong_was_blank());
        let long = [b"\r\n".as_slice(), b"GET /", &[b'a'; 120], b" HTTP/1.1\r\n"].concat();
        let mut f = Framing::with_limits(100, usize::MAX);
        assert!(f.feed(&long).is_ok());
        assert_eq!(f.take_overlong(), Some(1));
        assert!(!f.overlong_was_blank());
    }

    #[test]
    fn finds_whole_request_lines_above_ascii_in_each_feed() {
        let mut f = Framing::default();
        let bytes = b"GET /\xe9 HTTP/1.1\r\nX: \xe9\r\nContent-Length: 4\r\n\r\n\xe9\xe9\r\n\r\nGET /a HTTP/1.1\r\n\r\nGET /\xff";
        assert!(f.feed(bytes).is_ok());
        let spans = |f: &Framing| {
            f.high_lines()
                .iter()
                .map(|(r, head)| (r.start, r.end, *head))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            spans(&f),
            [(0, 16, 1)],
            "not a field, a body, or a split line"
        );
        assert_eq!(f.open_line(), Some(Some(bytes.len() - 6)));
        assert_eq!(f.continued_end(), None);
        assert!(f
            .feed(b" HTTP/1.1\r\n\r\n\r\nPUT /\xc3\xa9 HTTP/1.1\n\n")
            .is_ok());
        assert_eq!(
            spans(&f),
            [(15, 31, 4)],
            "the split line is not; a later one is"
        );
        assert_eq!((f.continued_end(), f.open_line()), (Some((10, 3)), None));
        assert!(f.feed(b"GET /x").is_ok());
        assert!(f.feed(b"yz").is_ok());
        assert_eq!(f.open_line(), Some(None), "open, begun in an earlier feed");
        assert!(f.feed(b" HTTP/1.1\r\n").is_ok());
        assert!(f.high_lines().is_empty());
        assert_eq!((f.continued_end(), f.open_line()), (Some((10, 5)), None));
    }

    fn chunked(body: &[u8]) -> Vec<u8> {
        [HEAD, body].concat()
    }

    /// Fed whole and at every split in two: the same verdict.
    fn verdict(bytes: &[u8]) -> Result<(), BadChunk> {
        let mut whole = Framing::default();
        let expect = whole.feed(bytes);
        for k in 0..=bytes.len() {
            let mut f = Framing::default();
            let got = f
                .feed(&bytes[..k])
                .and_then(|()| f.feed(&bytes[k..]).map_err(|BadChunk(at)| BadChunk(at + k)));
            assert_eq!(
                got,
                expect,
                "split at {k} of {:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        expect
    }

    fn at(bytes: &[u8], needle: &[u8]) -> usize {
        bytes
            .windows(needle.len())
            .position(|w| w == needle)
            .unwrap_or(usize::MAX)
    }

    #[test]
    fn good_chunked_bodies_pass() {
        for body in [
            &b"5\r\nhello\r\n0\r\n\r\n"[..],
            b"5;a=b\r\nhello\r\n0\r\n\r\n",
            b"5 ;a=b\r\nhello\r\n0\r\n\r\n",
            b"5; a = \"q \\\" x\" ; b\r\nhello\r\n0\r\n\r\n",
            b"A\r\n0123456789\r\n00\r\nx-t: 1\r\ny: 2\r\n\r\n",
            b"5;a=\"\xc3\xa9\"\r\nhello\r\n0\r\n\r\n",
        ] {
            assert_eq!(verdict(&chunked(body)), Ok(()));
        }
    }

    #[test]
    fn lenient_chunk_lines_are_refused_where_they_break() {
        for (body, bad) in [
            (&b"5 \r\nhello\r\n0\r\n\r\n"[..], &b"\r\nhello"[..]),
            (b"5\t\r\nhello\r\n0\r\n\r\n", b"\r\nhello"),
            (b"5;a=\x00\r\nhello\r\n0\r\n\r\n", b"\x00"),
            (b"5;a=b\x01c\r\nhello\r\n0\r\n\r\n", b"\x01"),
            (b"5;\r\nhello\r\n0\r\n\r\n", b"\r\nhello"),
            (b"5;a \r\nhello\r\n0\r\n\r\n", b"\r\nhello"),
            (b"5;a=\r\nhello\r\n0\r\n\r\n", b"\r\nhello"),
            (b"5;a=\"x\r\nhello\r\n0\r\n\r\n", b"\r\nhello"),
            (b"5;a=b c\r\nhello\r\n0\r\n\r\n", b"c\r\n"),
            (b"0 \r\n\r\n", b"\r\n\r\n"),
            (b"5\r\nhello\r\n0;\x7f\r\n\r\n", b"\x7f"),
            (b"5\r\nhellox\r\n0\r\n\r\n", b"x\r\n0"),
            (b"x\r\n", b"x\r\n"),
            (b"ffffffffffffffff0\r\n", b"0\r\n"),
            // A bare LF in the trailers: httparse would end them there and
            // hyper would drop what follows, the next request included.
            (b"5\r\nhello\r\n0\r\n\nGET / HTTP/1.1\r\n\r\n", b"\nGET"),
            (b"5\r\nhello\r\n0\r\nx: 1\n\nGET /", b"\n\nGET"),
            (b"5\r\nhello\r\n0\r\nx: 1\r\n\nGET /", b"\nGET"),
            // A trailer that would frame or route (QA, session 30: refused
            // only when the app read the body to its end).
            (b"5\r\nhello\r\n0\r\nContent-Length: 50\r\n\r\n", b": 50"),
            (b"5\r\nhello\r\n0\r\nx: 1\r\nHOST: evil\r\n\r\n", b": evil"),
            (b"0\r\nTransfer-Encoding: chunked\r\n\r\n", b": chunked"),
        ] {
            let bytes = chunked(body);
            let expect = BadChunk(HEAD.len() + at(body, bad));
            assert_eq!(verdict(&bytes), Err(expect), "{body:?}");
        }
    }

    #[test]
    fn broken_stays_broken() {
        let mut f = Framing::default();
        assert!(f.feed(&chunked(b"5 \r\n")).is_err());
        assert_eq!(f.feed(b"hello"), Err(BadChunk(0)));
    }

    #[test]
    fn lengths_and_pipelines_are_followed() {
        // The first body holds what would be a bad chunk line: it is data.
        let bytes = [
            &b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length:  9 \r\n\r\n5 \r\nhello"[..],
            b"\r\nGET / HTTP/1.1\nHost: x\n\n",
            HEAD,
            b"3\r\nabc\r\n0\r\nt: 1\r\n\r\n",
            b"POST / HTTP/1.1\r\ncontent-length: 3\r\nCONTENT-LENGTH: 3\r\n\r\nabc",
            HEAD,
            b"1 \r\n",
        ]
        .concat();
        assert_eq!(verdict(&bytes), Err(BadChunk(bytes.len() - 2)));
    }

    #[test]
    fn counts_the_requests_read_in_whole() {
        let mut f = Framing::default();
        let steps: [(&[u8], Option<u64>); 8] = [
            (b"", Some(0)),
            (HEAD, Some(0)),
            (b"3\r\nabc\r\n", Some(0)),
            (b"0\r\n\r\n", Some(1)),
            (b"GET / HT", Some(1)),
            (
                b"TP/1.1\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 2\r\n\r\na",
                Some(2),
            ),
            (b"bGET", Some(3)),
            (b" / HTTP/1.1\r\n\r\n", Some(4)),
        ];
        for (bytes, whole) in steps {
            assert!(f.feed(bytes).is_ok());
            let shown = String::from_utf8_lossy(bytes);
            assert_eq!(f.read_through(), whole, "after {shown:?}");
        }
        // A chunk line that broke: nothing more is vouched for.
        assert!(f.feed(HEAD).is_ok());
        assert!(f.feed(b"5 \r\n").is_err());
        assert_eq!(f.read_through(), None);
    }

    #[test]
    fn knows_when_a_body_is_still_owed() {
        let mut f = Framing::default();
        let steps: [(&[u8], bool); 7] = [
            (b"POST / HTTP/1.1\r\nContent-Length: 5\r\n", false),
            (b"\r\nhel", true),
            (b"lo", false),
            (b"GET / HTTP/1.1\r\n\r\nGET / HT", false),
            (b"TP/1.1\r\n\r\n", false),
            (HEAD, true),
            (b"3\r\nabc\r\n0\r\n\r\n", false),
        ];
        for (bytes, owed) in steps {
            assert!(f.feed(bytes).is_ok());
            assert_eq!(
                f.in_body(),
                owed,
                "after {:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        // A chunk line that broke: the client may well still be sending.
        assert!(f.feed(HEAD).is_ok());
        assert!(f.feed(b"5 \r\nhello").is_err());
        assert!(f.in_body());
    }

    #[test]
    fn heads_it_cannot_follow_end_the_watch() {
        for head in [
            &b"POST / HTTP/1.1\r\nContent-Length: 1 2\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            b"POST / HTTP/1.1\r\nbroken\r\n\r\n",
        ] {
            let mut f = Framing::default();
            assert_eq!(f.feed(&[head, b"5 \r\n"].concat()), Ok(()));
            assert_eq!(f.state, State::Opaque);
        }
    }

    #[test]
    fn transfer_encoding_wins_over_content_length() {
        let bytes =
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3 \r\n";
        assert_eq!(verdict(bytes), Err(BadChunk(bytes.len() - 2)));
    }
}

/// Property tests: `Framing` finds every head's end where httparse does and
/// frames its body as hyper does; chunked bodies built from the RFC 9112
/// grammar pass; any bytes, fed whole or split anywhere, give one verdict
/// and never panic. `cargo test` runs a bounded number of cases; for a
/// million: `PROPTEST_CASES=1000000 cargo test --release framing_props`.
#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    fn eol() -> impl Strategy<Value = &'static str> {
        prop_oneof![4 => Just("\r\n"), 1 => Just("\n")]
    }

    fn field() -> impl Strategy<Value = (String, String)> {
        let name = prop_oneof![
            Just("Content-Length".to_string()),
            Just("content-length".to_string()),
            Just("Transfer-Encoding".to_string()),
            Just("TRANSFER-encoding".to_string()),
            Just("Host".to_string()),
            Just("Content-Lengthx".to_string()),
            "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,20}",
        ];
        let value = prop_oneof![
            "[0-9]{1,3}",
            " *[0-9]{1,21}[ \t]*",
            "[0-9] [0-9]",
            "\\+?-?[0-9]{1,3},? ?[0-9]{0,2}",
            Just("chunked".to_string()),
            "[ -~\t]{0,30}",
        ];
        (name, value)
    }

    prop_compose! {
        fn head()(
            lead in prop::collection::vec(eol(), 0..2),
            line in "(GET|POST|PUT|X) /[a-z]{0,8} HTTP/1\\.[01]",
            fields in prop::collection::vec((field(), eol()), 0..8),
            first in eol(),
            last in eol(),
        ) -> String {
            let mut s: String = lead.concat();
            s += &line;
            s += first;
            for ((k, v), e) in fields {
                s += &format!("{k}:{v}{e}");
            }
            s + last
        }
    }

    /// The body framing hyper gives a head httparse parsed.
    fn hyper_framing(headers: &[httparse::Header<'_>]) -> State {
        let is = |h: &httparse::Header<'_>, n: &str| h.name.eq_ignore_ascii_case(n);
        if headers.iter().any(|h| is(h, "transfer-encoding")) {
            return State::SizeStart;
        }
        let mut length = None;
        for h in headers.iter().filter(|h| is(h, "content-length")) {
            let v = h.value;
            if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
                return State::Opaque;
            }
            match std::str::from_utf8(v)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
            {
                Some(n) if length.is_none_or(|l| l == n) => length = Some(n),
                _ => return State::Opaque,
            }
        }
        match length {
            Some(n) if n > 0 => State::Length(n),
            _ => State::Start,
        }
    }

    fn in_head(s: State) -> bool {
        matches!(
            s,
            State::Start
                | State::RequestLine
                | State::LineStart
                | State::HeadCr
                | State::Name
                | State::Value
        )
    }

    fn chunk_ext() -> impl Strategy<Value = String> {
        let token = "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,8}";
        let quoted = "\"([ \t!#-\\[\\]-~]|\\\\[ -~]){0,8}\"";
        let value = prop_oneof![token, quoted];
        prop::collection::vec(
            (
                "[ \t]{0,2}",
                "[ \t]{0,2}",
                token,
                prop::option::of(("[ \t]{0,2}", "[ \t]{0,2}", value)),
            ),
            0..3,
        )
        .prop_map(|exts| {
            exts.into_iter()
                .map(|(b1, b2, name, val)| {
                    let val = val
                        .map(|(b3, b4, v)| format!("{b3}={b4}{v}"))
                        .unwrap_or_default();
                    format!("{b1};{b2}{name}{val}")
                })
                .collect()
        })
    }

    prop_compose! {
        fn chunked_body()(
            chunks in prop::collection::vec((prop::collection::vec(any::<u8>(), 1..40), chunk_ext(), 0usize..3), 0..4),
            last_ext in chunk_ext(),
            trailers in prop::collection::vec("x-[a-z]{1,5}: [ -~]{0,10}", 0..3),
        ) -> Vec<u8> {
            let mut b = Vec::new();
            for (data, ext, zeros) in chunks {
                b.extend(format!("{}{:x}{ext}\r\n", "0".repeat(zeros), data.len()).bytes());
                b.extend(data);
                b.extend(b"\r\n");
            }
            b.extend(format!("0{last_ext}\r\n").bytes());
            for t in trailers {
                b.extend(format!("{t}\r\n").bytes());
            }
            b.extend(b"\r\n");
            b
        }
    }

    proptest! {
        #[test]
        fn framing_props_heads_end_where_httparse_says(h in head(), tail in prop::collection::vec(any::<u8>(), 0..8)) {
            let bytes = [h.as_bytes(), &tail].concat();
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut req = httparse::Request::new(&mut headers);
            if let Ok(httparse::Status::Complete(n)) = req.parse(&bytes) {
                let mut f = Framing::default();
                prop_assert_eq!(f.feed(&bytes[..n - 1]), Ok(()));
                prop_assert!(in_head(f.state) || f.state == State::Opaque, "{:?}", f.state);
                let mut f = Framing::default();
                prop_assert_eq!(f.feed(&bytes[..n]), Ok(()));
                if f.state != State::Opaque {
                    prop_assert_eq!(f.state, hyper_framing(req.headers));
                }
            }
        }

        #[test]
        fn framing_props_grammar_bodies_pass(body in chunked_body(), split in any::<prop::sample::Index>()) {
            let bytes = [&b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"[..], &body, b"GET / HTTP/1.1\r\n\r\n"].concat();
            let k = split.index(bytes.len() + 1);
            let mut f = Framing::default();
            prop_assert_eq!(f.feed(&bytes[..k]), Ok(()));
            prop_assert_eq!(f.feed(&bytes[k..]), Ok(()));
            prop_assert_eq!(f.state, State::Start);
        }

        #[test]
        fn framing_props_any_bytes_any_split_one_verdict(
            head in prop_oneof![Just(&b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"[..]), Just(&b""[..])],
            body in prop::collection::vec(prop_oneof![any::<u8>(), Just(b'\r'), Just(b'\n'), Just(b';'), Just(b'0')], 0..64),
            split in any::<prop::sample::Index>(),
        ) {
            let bytes = [head, &body].concat();
            let whole = Framing::default().feed(&bytes);
            let k = split.index(bytes.len() + 1);
            let mut f = Framing::default();
            let parts = f.feed(&bytes[..k]).and_then(|()| f.feed(&bytes[k..]).map_err(|BadChunk(at)| BadChunk(at + k)));
            prop_assert_eq!(whole, parts);
        }
    }
}
