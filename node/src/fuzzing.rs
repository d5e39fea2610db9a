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
