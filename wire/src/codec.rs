//! Frames on a byte stream: [`encode_frame`] appends header and body to an
//! output buffer, and [`FrameDecoder`] turns the bytes read from a
//! connection back into messages, one frame at a time. Nothing here opens,
//! polls or closes a socket; what to do about a bad frame is the caller's
//! decision (a brick answers `Malformed` and closes the connection).

use std::fmt;
use std::io::{self, Read};

use crate::body::DecodeError;
use crate::header::{Header, HeaderError, HEADER_SIZE};
use crate::limits::FRAME_BODY_SIZE_MAX;
use crate::message::{kind, CopyChunkRef, CopyIndexRef, Message, PrepareRef, Reply, Request};

/// Longest frame, header included, in bytes. A [`FrameDecoder`] never holds
/// more than this.
pub const FRAME_SIZE_MAX: usize = HEADER_SIZE + FRAME_BODY_SIZE_MAX;

/// Size of a decoder's buffer while it holds no frame larger than this. One
/// read fills it with as many small frames as have arrived; a larger frame
/// grows the buffer to the frame's size, and the buffer shrinks back once
/// that frame has been taken. With `CONNECTIONS_PER_BRICK_MAX` connections
/// this bounds a brick's idle read buffers to 64 MiB.
pub const DECODER_BUFFER_SIZE_MIN: usize = 64 * 1024;

const _: () = assert!(DECODER_BUFFER_SIZE_MIN >= 2 * HEADER_SIZE);
const _: () = assert!(DECODER_BUFFER_SIZE_MIN <= FRAME_SIZE_MAX);

/// Appends one frame holding `message` to `out`: a header with the body's
/// length and crc, then the body. Only `out` grows, by one reservation.
///
/// The message is encoded as it is, even if it breaks a limit; run
/// [`Message::check_limits`] first on anything built from user input.
pub fn encode_frame(request_id: u64, message: &Message, out: &mut Vec<u8>) {
    encode_with(request_id, message.kind(), message.body_len(), out, |out| {
        message.encode_body(out)
    });
}

/// [`encode_frame`] for a request, without wrapping it in a [`Message`].
pub fn encode_request(request_id: u64, request: &Request, out: &mut Vec<u8>) {
    encode_with(request_id, request.kind(), request.body_len(), out, |out| {
        request.encode_body(out)
    });
}

/// [`encode_request`] for a prepare borrowed from where its bytes are
/// kept: the same frame, without building the request first.
pub fn encode_prepare(request_id: u64, prepare: &PrepareRef<'_>, out: &mut Vec<u8>) {
    encode_with(request_id, prepare.kind(), prepare.body_len(), out, |out| {
        prepare.encode_body(out)
    });
}

/// [`encode_request`] for a copy chunk borrowed from where its bytes are
/// kept (a brick's arena): the same frame, with the bytes copied once,
/// straight into `out`.
pub fn encode_copy_chunk(request_id: u64, chunk: &CopyChunkRef<'_>, out: &mut Vec<u8>) {
    encode_with(request_id, kind::COPY_CHUNK, chunk.body_len(), out, |out| {
        chunk.encode_body(out)
    });
}

/// The frame [`encode_copy_chunk`] appends, in three parts, so that the
/// chunk's bytes can go to a socket from where they lie: the header and
/// the body's fields before the bytes (returned first), the bytes
/// themselves (`chunk.bytes`, not copied), and the fields after them.
/// `bytes_crc` is the crc32 of `chunk.bytes` when the caller has it (a
/// brick keeps it for stretches of its arena): the bytes are then not read
/// at all, their crc being combined with the fields' around them.
pub fn copy_chunk_frame_around(
    request_id: u64,
    chunk: &CopyChunkRef<'_>,
    bytes_crc: Option<u32>,
) -> (Vec<u8>, Vec<u8>) {
    let mut head = vec![0; HEADER_SIZE];
    let mut tail = Vec::new();
    chunk.encode_body_around(&mut head, &mut tail);
    let header = around_header(
        request_id,
        kind::COPY_CHUNK,
        &head[HEADER_SIZE..],
        chunk.bytes,
        bytes_crc,
        &tail,
    );
    debug_assert_eq!(header.body_len as usize, chunk.body_len());
    put_header(&header, &mut head);
    (head, tail)
}

/// The frame of a `CopyIndex` request in two parts, as
/// [`copy_chunk_frame_around`] gives a chunk's: the header and the body's
/// fields (returned), then the bytes themselves (`part.bytes`, not copied),
/// which end the body. A source sends its index's parts this way, from its
/// snapshot of the table.
pub fn copy_index_frame_head(request_id: u64, part: &CopyIndexRef<'_>) -> Vec<u8> {
    let mut head = vec![0; HEADER_SIZE];
    part.encode_body_head(&mut head);
    let header = around_header(
        request_id,
        kind::COPY_INDEX,
        &head[HEADER_SIZE..],
        part.bytes,
        None,
        &[],
    );
    debug_assert_eq!(header.body_len as usize, part.body_len());
    put_header(&header, &mut head);
    head
}

/// The header of a frame whose body is `fields`, `bytes` and `tail` in
/// that order; `bytes_crc`, when given, stands for the crc of `bytes`,
/// which are then not read.
fn around_header(
    request_id: u64,
    kind: u8,
    fields: &[u8],
    bytes: &[u8],
    bytes_crc: Option<u32>,
    tail: &[u8],
) -> Header {
    let mut crc = crc32fast::Hasher::new();
    crc.update(fields);
    match bytes_crc {
        Some(known) => crc.combine(&crc32fast::Hasher::new_with_initial_len(
            known,
            bytes.len() as u64,
        )),
        None => crc.update(bytes),
    }
    crc.update(tail);
    Header {
        kind,
        body_len: u32::try_from(fields.len() + bytes.len() + tail.len())
            .expect("a frame body longer than u32::MAX cannot be encoded"),
        request_id,
        body_crc: crc.finalize(),
    }
}

/// Writes `header` into the first [`HEADER_SIZE`] bytes of `head`.
fn put_header(header: &Header, head: &mut [u8]) {
    let header_bytes: &mut [u8; HEADER_SIZE] = (&mut head[..HEADER_SIZE])
        .try_into()
        .expect("the header slice is HEADER_SIZE long");
    header.encode(header_bytes);
}

/// [`encode_frame`] for a reply, without wrapping it in a [`Message`].
pub fn encode_reply(request_id: u64, reply: &Reply, out: &mut Vec<u8>) {
    encode_with(request_id, reply.kind(), reply.body_len(), out, |out| {
        reply.encode_body(out)
    });
}

fn encode_with(
    request_id: u64,
    kind: u8,
    body_len: usize,
    out: &mut Vec<u8>,
    encode_body: impl FnOnce(&mut Vec<u8>),
) {
    let body_len_u32 =
        u32::try_from(body_len).expect("a frame body longer than u32::MAX cannot be encoded");
    out.reserve(HEADER_SIZE + body_len);
    let header_at = out.len();
    // The header needs the body's crc, so its room is kept and it is written
    // once the body is in place.
    out.extend_from_slice(&[0; HEADER_SIZE]);
    encode_body(out);
    let body = &out[header_at + HEADER_SIZE..];
    assert_eq!(
        body.len(),
        body_len,
        "body_len() disagrees with encode_body() for kind {kind}"
    );
    let header = Header {
        kind,
        body_len: body_len_u32,
        request_id,
        body_crc: maps::crc32(body),
    };
    let header_bytes: &mut [u8; HEADER_SIZE] = (&mut out[header_at..header_at + HEADER_SIZE])
        .try_into()
        .expect("the header slice is HEADER_SIZE long");
    header.encode(header_bytes);
}

/// Why a frame could not be decoded. After any of these the decoder stops
/// (see [`FrameDecoder::next_frame`]) and the connection should be closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The header was refused, so the frame's length is unknown and the
    /// stream cannot be followed further.
    BadHeader(HeaderError),
    /// The body does not match the crc in the header.
    BadCrc { request_id: u64 },
    /// The body's crc matched but its contents could not be decoded.
    BadBody { request_id: u64, error: DecodeError },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::BadHeader(error) => error.fmt(f),
            FrameError::BadCrc { request_id } => write!(
                f,
                "frame {request_id}: the body crc does not match the header; the bytes were damaged on the way, so the connection cannot be trusted"
            ),
            FrameError::BadBody { request_id, error } => write!(
                f,
                "frame {request_id}: malformed body: {error}; check that the peer runs the same DDS version"
            ),
        }
    }
}

impl std::error::Error for FrameError {}

impl From<HeaderError> for FrameError {
    fn from(error: HeaderError) -> FrameError {
        FrameError::BadHeader(error)
    }
}

/// Decodes the frames of one connection as its bytes arrive.
///
/// Call [`FrameDecoder::read_from`] when the socket is readable, then
/// [`FrameDecoder::next_frame`] until it returns `Ok(None)`, and repeat. The
/// decoder reads straight from the socket into its own buffer, so bytes are
/// not copied on the way in; a frame's byte strings are copied once, into
/// the decoded message.
///
/// Memory is bounded: the buffer is [`DECODER_BUFFER_SIZE_MIN`] bytes, grows
/// only to the size of a frame whose header has been validated, and never
/// past [`FRAME_SIZE_MAX`]; a header claiming more is refused from its 24
/// bytes alone. It shrinks back when a small frame empties it. Consumed frames are skipped by moving a read offset; the
/// unread tail is moved to the front only when the room after it runs low and
/// the tail is no longer than what was consumed, so the copying costs at most
/// one pass over the bytes received.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    /// Bytes `start..end` are received and not yet decoded. The length of
    /// the vector is the buffer's size (its bytes are initialised, so reads
    /// can go into `end..` without unsafe code), and its capacity is kept
    /// equal to its length.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Set by the first error; every later call to `next_frame` returns it.
    failed: Option<FrameError>,
    /// Bytes moved by compaction over the decoder's life, so tests can check
    /// that the copying stays linear in the bytes received.
    compacted_bytes: u64,
    /// Whether the last read returned less than the room it was offered.
    short_read: bool,
    /// The length of the last frame taken: once the buffer is empty, a
    /// buffer grown for large frames is given back if that frame was small
    /// (see [`FrameDecoder::settle`]).
    last_taken: usize,
}

/// A frame as [`FrameDecoder::next_frame_lending`] gives it.
#[derive(Debug)]
pub enum Frame<'a> {
    Message(Message),
    /// A `CopyChunk` request, its bytes still in the decoder's buffer.
    CopyChunk(CopyChunkRef<'a>),
    /// A `CopyIndex` request, its bytes still in the decoder's buffer.
    CopyIndex(CopyIndexRef<'a>),
}

impl FrameDecoder {
    /// An empty decoder. It allocates nothing until the first read.
    pub fn new() -> FrameDecoder {
        FrameDecoder::default()
    }

    /// Bytes received and not yet decoded.
    pub fn buffered_len(&self) -> usize {
        self.end - self.start
    }

    /// Bytes of memory the decoder holds for its buffer; at most
    /// [`FRAME_SIZE_MAX`].
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Whether a frame error has stopped the decoder.
    pub fn failed(&self) -> Option<&FrameError> {
        self.failed.as_ref()
    }

    /// Makes one `read` call on `reader` into the free part of the buffer
    /// and returns what it returned: `Ok(0)` means the peer closed the
    /// stream, and `WouldBlock`/`Interrupted` pass through for the caller's
    /// event loop.
    ///
    /// There is always room to read once `next_frame` has returned
    /// `Ok(None)`. If the caller reads again while a whole frame or a bad
    /// header is still buffered, the buffer may be full; that is refused with
    /// an `io::ErrorKind::Other` error rather than reported as `Ok(0)`, which
    /// would look like the end of the stream.
    pub fn read_from<R: Read>(&mut self, reader: &mut R) -> io::Result<usize> {
        self.settle();
        self.make_read_room();
        if self.end == self.buf.len() {
            return Err(io::Error::other(
                "frame decoder buffer is full: call next_frame until it returns Ok(None) before reading more",
            ));
        }
        let room = self.buf.len() - self.end;
        let count = reader.read(&mut self.buf[self.end..])?;
        assert!(
            count <= room,
            "reader claims to have read more than it was given room for"
        );
        self.end += count;
        self.short_read = count < room;
        Ok(count)
    }

    /// Whether the last [`FrameDecoder::read_from`] returned fewer bytes
    /// than it had room for. From a TCP socket that means the socket had
    /// nothing more at that moment, so an event loop need not spend another
    /// `read` to hear `WouldBlock`: with edge-triggered readiness, bytes
    /// that arrive later bring an event of their own.
    pub fn last_read_was_short(&self) -> bool {
        self.short_read
    }

    /// Appends as much of `bytes` as fits and returns how many were taken;
    /// for callers that already hold the bytes (tests, the simulator). Call
    /// `next_frame` until `Ok(None)` and feed the rest if some were left.
    pub fn feed(&mut self, bytes: &[u8]) -> usize {
        let mut reader = bytes;
        // Reading from a slice cannot fail; a full buffer takes nothing.
        self.read_from(&mut reader).unwrap_or(0)
    }

    /// The next whole frame in the buffer, `Ok(None)` if more bytes are
    /// needed, or the error that stopped the decoder. Once an error has been
    /// returned the decoder is stopped: the stream may be out of step, so it
    /// returns the same error on every later call.
    pub fn next_frame(&mut self) -> Result<Option<(u64, Message)>, FrameError> {
        Ok(self
            .next_frame_lending()?
            .map(|(request_id, frame)| match frame {
                Frame::Message(message) => (request_id, message),
                Frame::CopyChunk(chunk) => (request_id, Message::Request(chunk.to_request())),
                Frame::CopyIndex(part) => (request_id, Message::Request(part.to_request())),
            }))
    }

    /// [`FrameDecoder::next_frame`], except that a `CopyChunk` or
    /// `CopyIndex` request comes with its bytes borrowed from the decoder's
    /// buffer rather than copied out: a recovery copy's chunks are most of
    /// the bytes a brick receives then, and that copy was a fifth of the
    /// receiving side's time. They stay valid until the decoder is used
    /// again.
    pub fn next_frame_lending(&mut self) -> Result<Option<(u64, Frame<'_>)>, FrameError> {
        self.settle();
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        let available = self.end - self.start;
        if available < HEADER_SIZE {
            return Ok(None);
        }
        let header_bytes: &[u8; HEADER_SIZE] = self.buf[self.start..self.start + HEADER_SIZE]
            .try_into()
            .expect("the header slice is HEADER_SIZE long");
        let header = match Header::decode(header_bytes) {
            Ok(header) => header,
            Err(error) => return Err(self.fail(FrameError::BadHeader(error))),
        };
        // The header is valid, so the frame fits FRAME_SIZE_MAX.
        let frame_len = HEADER_SIZE + header.body_len as usize;
        if available < frame_len {
            self.make_frame_room(frame_len);
            return Ok(None);
        }
        let body = self.start + HEADER_SIZE..self.start + frame_len;
        // Taken now; the bytes stay where they are until the next call.
        self.consume(frame_len);
        let request_id = header.request_id;
        if maps::crc32(&self.buf[body.clone()]) != header.body_crc {
            return Err(self.fail(FrameError::BadCrc { request_id }));
        }
        if header.kind == kind::COPY_CHUNK {
            // Checked first, then decoded again to lend (a borrow returned
            // from one arm of a match cannot coexist with the other arm's
            // use of `self`); the second pass reads a few fixed fields.
            if let Err(error) = CopyChunkRef::decode(&self.buf[body.clone()]) {
                return Err(self.fail(FrameError::BadBody { request_id, error }));
            }
            let chunk = CopyChunkRef::decode(&self.buf[body]).expect("decoded just above");
            return Ok(Some((request_id, Frame::CopyChunk(chunk))));
        }
        if header.kind == kind::COPY_INDEX {
            // As for a chunk, above.
            if let Err(error) = CopyIndexRef::decode(&self.buf[body.clone()]) {
                return Err(self.fail(FrameError::BadBody { request_id, error }));
            }
            let part = CopyIndexRef::decode(&self.buf[body]).expect("decoded just above");
            return Ok(Some((request_id, Frame::CopyIndex(part))));
        }
        match Message::decode(header.kind, &self.buf[body]) {
            Ok(message) => Ok(Some((request_id, Frame::Message(message)))),
            Err(error) => Err(self.fail(FrameError::BadBody { request_id, error })),
        }
    }

    fn fail(&mut self, error: FrameError) -> FrameError {
        self.failed = Some(error.clone());
        error
    }

    /// Takes `count` bytes from the front of what is buffered. Only the
    /// offsets move: the bytes stay in place until the next call, for a
    /// frame lent by [`FrameDecoder::next_frame_lending`].
    fn consume(&mut self, count: usize) {
        self.start += count;
        assert!(self.start <= self.end);
        self.last_taken = count;
    }

    /// At the start of every call that may read or decode, once a taken
    /// frame can no longer be borrowed: an empty buffer starts over at its
    /// front, and large frames are over once a small one empties it, so
    /// their memory is given back rather than kept for every idle
    /// connection. While large frames follow each other (a recovery copy)
    /// the buffer stays, instead of being freed and zeroed again for every
    /// frame.
    fn settle(&mut self) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.buf.len() > DECODER_BUFFER_SIZE_MIN
                && self.last_taken <= DECODER_BUFFER_SIZE_MIN
            {
                self.buf.truncate(DECODER_BUFFER_SIZE_MIN);
                self.buf.shrink_to_fit();
            }
        }
    }

    /// Moves the unread bytes to the front of the buffer.
    fn compact(&mut self) {
        if self.start > 0 {
            self.compacted_bytes += (self.end - self.start) as u64;
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }

    /// Before a read: allocate the buffer on first use, and move the unread
    /// tail to the front when little room is left after it. The tail is moved
    /// only if it is no longer than the consumed bytes before it, so each
    /// byte received is copied at most once on average.
    fn make_read_room(&mut self) {
        if self.buf.is_empty() {
            self.buf = vec![0; DECODER_BUFFER_SIZE_MIN];
        }
        let spare = self.buf.len() - self.end;
        let unread = self.end - self.start;
        if self.start > 0 && (spare == 0 || (spare < self.buf.len() / 2 && unread <= self.start)) {
            self.compact();
        }
    }

    /// Once a valid header has said how long its frame is: make sure the
    /// whole frame fits from `start`, compacting and then growing the buffer
    /// to exactly the frame's size if needed.
    fn make_frame_room(&mut self, frame_len: usize) {
        assert!(frame_len <= FRAME_SIZE_MAX);
        if self.buf.len() - self.start >= frame_len {
            return;
        }
        self.compact();
        if self.buf.len() < frame_len {
            // reserve_exact keeps the capacity at the frame's size, so the
            // bound holds for the memory held and not just the length used.
            self.buf.reserve_exact(frame_len - self.buf.len());
            self.buf.resize(frame_len, 0);
        }
    }
}

#[cfg(test)]
mod tests;
