//! The `/membrane/sync/1` request-response codec: one [`SyncMessage`] each way, CBOR,
//! size-checked before decoding.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use membrane_protocol::Space;
use membrane_protocol::codec;
use membrane_protocol::signals::DocRef;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// The protocol name.
pub(crate) const SYNC_PROTOCOL: StreamProtocol = StreamProtocol::new("/membrane/sync/1");

/// Largest sync message either way, checked before decoding: a few full frames.
pub(crate) const MAX_SYNC_MESSAGE_BYTES: usize = 3 * membrane_crdt::medium::MAX_SYNC_FRAME_BYTES;

/// One step of a sync exchange for one document: the frames the sender has for the
/// receiver, whether it holds more, and (in responses) why it refused the request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct SyncMessage {
    /// Space of the document.
    pub(crate) space: Space,
    /// Which document.
    pub(crate) doc: DocRef,
    /// Sync frames, in order.
    pub(crate) frames: Vec<ByteBuf>,
    /// The sender has more frames queued: ask again.
    pub(crate) more: bool,
    /// Set in a response that refused the request's frames.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) refused: Option<Refusal>,
}

/// Why a sync request was refused.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Refusal {
    /// The responder is not in this space.
    UnknownSpace,
    /// The responder may not hold this trusted document, as far as it knows: retry later.
    NotYet,
    /// The request carried bad data; the session is dropped.
    Rejected,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct SyncCodec;

async fn read_limited<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<SyncMessage> {
    let mut bytes = Vec::new();
    // Read one byte past the limit, so an oversized message is detected without reading it.
    io.take(MAX_SYNC_MESSAGE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .await?;
    codec::from_slice(&bytes, MAX_SYNC_MESSAGE_BYTES)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

async fn write_all<T: AsyncWrite + Unpin + Send>(io: &mut T, msg: &SyncMessage) -> io::Result<()> {
    let bytes = codec::to_vec_limited(msg, MAX_SYNC_MESSAGE_BYTES)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    io.write_all(&bytes).await?;
    io.close().await
}

impl libp2p::request_response::Codec for SyncCodec {
    type Protocol = StreamProtocol;
    type Request = SyncMessage;
    type Response = SyncMessage;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<SyncMessage>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_limited(io).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<SyncMessage>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_limited(io).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: SyncMessage,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_all(io, &req).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: SyncMessage,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_all(io, &res).await
    }
}
