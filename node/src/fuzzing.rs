//! Entry points for the fuzz targets in `node/fuzz/` and the test that replays their
//! inputs: each decodes remote input the way the node does and must never panic.

/// Decodes a sync message as the request-response codec does (size-limited CBOR).
pub fn sync_message(data: &[u8]) {
    let _ = membrane_protocol::codec::from_slice::<crate::network::codec::SyncMessage>(
        data,
        crate::network::codec::MAX_SYNC_MESSAGE_BYTES,
    );
}

/// Parses an API request body for the verb the first byte picks, as the router does
/// (after the body limit).
pub fn api_request(data: &[u8]) {
    let verbs = crate::api::verbs::all();
    let Some((first, body)) = data.split_first() else {
        return;
    };
    let verb = &verbs[usize::from(*first) % verbs.len()];
    if body.len() <= crate::api::http::MAX_BODY_BYTES {
        let _ = (verb.parse)(body);
    }
}

/// Feeds a server-sent event stream to the client's parser in two chunks.
pub fn sse(data: &[u8]) {
    let mut parser = crate::api::client::SseParser::default();
    let cut = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    let _ = parser.push(&data[..cut]);
    let _ = parser.push(&data[cut..]);
}

/// Reads the bytes as a `/membrane/direct/1` request and as an acknowledgement, through
/// the codec (size-checked before decoding), and opens a request the way the receiver does.
pub fn direct_message(data: &[u8]) {
    use futures::executor::block_on;
    use futures::io::Cursor;
    use libp2p::request_response::Codec;

    use crate::network::direct_codec::{DIRECT_PROTOCOL, DirectCodec, DirectRequest};

    // Any fixed clock and sender: the fuzzer cannot forge signatures, so what it explores is
    // the decoding before the signature check.
    const NOW: u64 = 1_763_700_000_000;
    let sender = membrane_protocol::Keypair::from_seed(&[7; 32]).public();
    let mut codec = DirectCodec;
    if let Ok(DirectRequest::Frame(bytes)) =
        block_on(codec.read_request(&DIRECT_PROTOCOL, &mut Cursor::new(data)))
    {
        let _ = crate::network::direct_codec::open_request(&bytes, &sender, NOW);
    }
    let _ = block_on(codec.read_response(&DIRECT_PROTOCOL, &mut Cursor::new(data)));
}
