//! The `/membrane/direct/1` request-response codec: a request is one signed
//! direct-message envelope as it travels; the response is the receiver's
//! acknowledgement, accepted or refused with a typed reason. Both sides are size-checked
//! before anything is decoded.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use membrane_protocol::codec;
use membrane_protocol::envelope::{ENVELOPE_OVERHEAD, EnvelopeError};
use membrane_protocol::signals::DirectMessage;
use membrane_protocol::{Envelope, EnvelopeId, PublicKey};
use serde::{Deserialize, Serialize};
use sha2::Digest;

/// The protocol name.
pub(crate) const DIRECT_PROTOCOL: StreamProtocol = StreamProtocol::new("/membrane/direct/1");

/// Largest request: one direct-message envelope (`Kind::Direct`'s frame limit).
pub(crate) const MAX_DIRECT_REQUEST_BYTES: usize = 17 * 1024 + ENVELOPE_OVERHEAD;
/// Largest acknowledgement.
pub(crate) const MAX_DIRECT_ACK_BYTES: usize = 2 * 1024;
/// Longest explanation in a refusal (cut at a character boundary below this).
pub(crate) const MAX_DETAIL_BYTES: usize = 512;

/// A request as read from the stream: the envelope's bytes, or the news that they were
/// larger than [`MAX_DIRECT_REQUEST_BYTES`] (nothing of them decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DirectRequest {
    /// The bytes of one envelope, at most [`MAX_DIRECT_REQUEST_BYTES`].
    Frame(Vec<u8>),
    /// More bytes than a request may hold.
    Oversized,
}

impl DirectRequest {
    /// The id of the envelope the request carries: SHA-256 of its bytes, which for a
    /// well-formed request is the envelope id.
    pub(crate) fn id(&self) -> EnvelopeId {
        match self {
            DirectRequest::Frame(bytes) => EnvelopeId(sha2::Sha256::digest(bytes).into()),
            DirectRequest::Oversized => EnvelopeId([0; 32]),
        }
    }
}

/// Why a receiver refused a message. The wire form is the snake_case name; a reason this
/// version does not know reads as [`Reason::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Reason {
    /// The request is not a well-formed, well-signed direct message from the peer that
    /// sent it.
    Malformed,
    /// The message names another agent as its recipient.
    NotForYou,
    /// The message is older than the receiver accepts (a replay), or dated in the future.
    Stale,
    /// The receiver has not joined the message's space.
    UnknownSpace,
    /// The message is longer than the receiver accepts.
    TooLarge,
    /// The sender sent more than the receiver's per-sender rate allows.
    RateLimited,
    /// The receiving agent does not trust the sender enough.
    Untrusted,
    /// The receiver's immune layer holds the sender in quarantine.
    Quarantined,
    /// The receiver's immune layer shut the sender out (banned, or its reputation is too
    /// low to stay connected).
    Banned,
    /// The receiving agent's halt token budget cannot take the message.
    BudgetExhausted,
    /// The receiver's operator paused every crossing.
    Paused,
    /// The receiver could not record the message.
    Unavailable,
    /// A reason this version does not know.
    #[serde(other)]
    Other,
}

impl Reason {
    /// Every reason, in wire order.
    pub const ALL: [Reason; 13] = [
        Reason::Malformed,
        Reason::NotForYou,
        Reason::Stale,
        Reason::UnknownSpace,
        Reason::TooLarge,
        Reason::RateLimited,
        Reason::Untrusted,
        Reason::Quarantined,
        Reason::Banned,
        Reason::BudgetExhausted,
        Reason::Paused,
        Reason::Unavailable,
        Reason::Other,
    ];

    /// The stable name: the wire form, the API's and the metrics' label.
    pub fn name(self) -> &'static str {
        match self {
            Reason::Malformed => "malformed",
            Reason::NotForYou => "not_for_you",
            Reason::Stale => "stale",
            Reason::UnknownSpace => "unknown_space",
            Reason::TooLarge => "too_large",
            Reason::RateLimited => "rate_limited",
            Reason::Untrusted => "untrusted",
            Reason::Quarantined => "quarantined",
            Reason::Banned => "banned",
            Reason::BudgetExhausted => "budget_exhausted",
            Reason::Paused => "paused",
            Reason::Unavailable => "unavailable",
            Reason::Other => "other",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A refusal: the reason, what exactly was wrong, and when a retry may pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Refusal {
    /// Why, as a stable code.
    pub reason: Reason,
    /// What was wrong and what was expected, for people and LLMs.
    pub detail: String,
    /// For `rate_limited` (and `budget_exhausted` with a window): ms until a retry may pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl Refusal {
    /// A refusal with `detail` cut to [`MAX_DETAIL_BYTES`].
    pub(crate) fn new(reason: Reason, detail: impl Into<String>) -> Self {
        let mut detail = detail.into();
        if detail.len() > MAX_DETAIL_BYTES {
            let mut cut = MAX_DETAIL_BYTES - 3;
            while !detail.is_char_boundary(cut) {
                cut -= 1;
            }
            detail.truncate(cut);
            detail.push_str("...");
        }
        Self {
            reason,
            detail,
            retry_after_ms: None,
        }
    }

    /// The same, with a retry hint.
    pub(crate) fn retry_after(mut self, ms: u64) -> Self {
        self.retry_after_ms = Some(ms);
        self
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason, self.detail)?;
        if let Some(ms) = self.retry_after_ms {
            write!(f, " (retry in {ms} ms)")?;
        }
        Ok(())
    }
}

/// The receiver's answer to one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DirectAck {
    /// The message answered (SHA-256 of the request's bytes).
    pub(crate) id: EnvelopeId,
    /// Its tokens as the receiver counted them (0 when refused before counting).
    pub(crate) tokens: u64,
    /// The receiver already had this message: accepted before, not logged twice.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) duplicate: bool,
    /// Set when refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) refused: Option<Refusal>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct DirectCodec;

/// Reads at most `limit` bytes and one more, so an oversized message is detected without
/// reading it all.
async fn read_bounded<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    limit: usize,
) -> io::Result<Option<Vec<u8>>> {
    let mut bytes = Vec::new();
    io.take(limit as u64 + 1).read_to_end(&mut bytes).await?;
    Ok((bytes.len() <= limit).then_some(bytes))
}

/// Opens a request's bytes as the receiver does: at most [`MAX_DIRECT_REQUEST_BYTES`]
/// (checked before decoding), a valid envelope signed by `sender` (the peer on the other
/// end of the stream), dated at most the allowed skew ahead of `now_ms`, carrying a valid
/// direct message.
pub(crate) fn open_request(
    bytes: &[u8],
    sender: &PublicKey,
    now_ms: u64,
) -> Result<(Envelope, DirectMessage), EnvelopeError> {
    let envelope = Envelope::decode(bytes, MAX_DIRECT_REQUEST_BYTES, now_ms)?;
    envelope.expect_author(sender)?;
    let message = envelope.open::<DirectMessage>()?;
    Ok((envelope, message))
}

/// Decodes an acknowledgement: at most [`MAX_DIRECT_ACK_BYTES`], checked before decoding.
pub(crate) fn decode_ack(bytes: &[u8]) -> Result<DirectAck, codec::DecodeError> {
    codec::from_slice(bytes, MAX_DIRECT_ACK_BYTES)
}

impl libp2p::request_response::Codec for DirectCodec {
    type Protocol = StreamProtocol;
    type Request = DirectRequest;
    type Response = DirectAck;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<DirectRequest>
    where
        T: AsyncRead + Unpin + Send,
    {
        Ok(match read_bounded(io, MAX_DIRECT_REQUEST_BYTES).await? {
            Some(bytes) => DirectRequest::Frame(bytes),
            None => DirectRequest::Oversized,
        })
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<DirectAck>
    where
        T: AsyncRead + Unpin + Send,
    {
        let bytes = read_bounded(io, MAX_DIRECT_ACK_BYTES)
            .await?
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("acknowledgement over {MAX_DIRECT_ACK_BYTES} bytes"),
                )
            })?;
        decode_ack(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: DirectRequest,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let DirectRequest::Frame(bytes) = req else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an oversized request is never sent",
            ));
        };
        if bytes.len() > MAX_DIRECT_REQUEST_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "request of {} bytes over {MAX_DIRECT_REQUEST_BYTES}",
                    bytes.len()
                ),
            ));
        }
        io.write_all(&bytes).await?;
        io.close().await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: DirectAck,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let bytes = codec::to_vec_limited(&res, MAX_DIRECT_ACK_BYTES)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        io.write_all(&bytes).await?;
        io.close().await
    }
}

#[cfg(test)]
mod tests {
    use futures::executor::block_on;
    use futures::io::Cursor;
    use libp2p::request_response::Codec;
    use membrane_protocol::envelope::Kind;

    use super::*;

    #[test]
    fn the_request_limit_is_the_direct_kinds_frame_limit() {
        assert_eq!(MAX_DIRECT_REQUEST_BYTES, Kind::Direct.max_frame_bytes());
    }

    #[test]
    fn an_oversized_request_is_reported_without_decoding_it() {
        let mut codec = DirectCodec;
        let mut at_limit = Cursor::new(vec![0xff; MAX_DIRECT_REQUEST_BYTES]);
        let read = block_on(codec.read_request(&DIRECT_PROTOCOL, &mut at_limit)).unwrap();
        assert!(matches!(read, DirectRequest::Frame(b) if b.len() == MAX_DIRECT_REQUEST_BYTES));
        let mut over = Cursor::new(vec![0xff; 10 * MAX_DIRECT_REQUEST_BYTES]);
        let read = block_on(codec.read_request(&DIRECT_PROTOCOL, &mut over)).unwrap();
        assert_eq!(read, DirectRequest::Oversized);
        // Only one byte past the limit was read.
        assert_eq!(over.position(), MAX_DIRECT_REQUEST_BYTES as u64 + 1);
    }

    #[test]
    fn acks_round_trip_and_bad_ones_are_errors() {
        let ack = DirectAck {
            id: EnvelopeId([7; 32]),
            tokens: 12,
            duplicate: false,
            refused: Some(
                Refusal::new(Reason::RateLimited, "x".repeat(4 * MAX_DETAIL_BYTES))
                    .retry_after(1500),
            ),
        };
        let mut wire = Cursor::new(Vec::new());
        block_on(DirectCodec.write_response(&DIRECT_PROTOCOL, &mut wire, ack.clone())).unwrap();
        let bytes = wire.into_inner();
        assert!(bytes.len() <= MAX_DIRECT_ACK_BYTES);
        let back =
            block_on(DirectCodec.read_response(&DIRECT_PROTOCOL, &mut Cursor::new(bytes))).unwrap();
        assert_eq!(back, ack);
        assert!(
            back.refused
                .as_ref()
                .is_some_and(|r| r.detail.len() <= MAX_DETAIL_BYTES)
        );
        let garbage = Cursor::new(vec![0x9f; 64]);
        assert!(block_on(DirectCodec.read_response(&DIRECT_PROTOCOL, &mut { garbage })).is_err());
        let huge = Cursor::new(vec![0; MAX_DIRECT_ACK_BYTES + 1]);
        assert!(block_on(DirectCodec.read_response(&DIRECT_PROTOCOL, &mut { huge })).is_err());
    }

    #[test]
    fn a_reason_from_a_newer_version_reads_as_other() {
        #[derive(Serialize)]
        struct Future<'a> {
            reason: &'a str,
            detail: &'a str,
        }
        let bytes = codec::to_vec(&Future {
            reason: "solar_flare",
            detail: "d",
        })
        .unwrap();
        let refusal: Refusal = codec::from_slice(&bytes, 1024).unwrap();
        assert_eq!(refusal.reason, Reason::Other);
        for reason in Reason::ALL {
            let bytes = codec::to_vec(&reason).unwrap();
            assert_eq!(codec::from_slice::<Reason>(&bytes, 64).unwrap(), reason);
        }
    }
}
