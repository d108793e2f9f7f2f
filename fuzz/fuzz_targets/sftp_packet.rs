//! The SFTP packet decoder on a client's byte stream, framed as
//! `ferry_dataplane::sftp::serve` frames it: a u32 length (1 ..=
//! `MAX_PACKET_LEN`, else the channel closes), then russh-sftp's
//! `Packet::try_from`. Every packet that decodes must encode again, and that
//! encoding must decode to the same encoding (the codec is stable; INIT and VERSION
//! extensions are a map, so only their length is compared).
#![no_main]

use bytes::{Buf, Bytes, BytesMut};
use ferry_dataplane::sftp::MAX_PACKET_LEN;
use libfuzzer_sys::fuzz_target;
use russh_sftp::protocol::Packet;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    while buf.len() >= 4 {
        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        if len == 0 || len > MAX_PACKET_LEN {
            return; // serve closes the channel
        }
        if buf.len() < 4 + len as usize {
            return; // serve waits for more data
        }
        buf.advance(4);
        let mut frame = buf.split_to(len as usize).freeze();
        let Ok(packet) = Packet::try_from(&mut frame) else {
            continue; // serve answers BAD_MESSAGE and reads on
        };
        let _ = packet.get_request_id();
        let debug = format!("{packet:?}");
        let Ok(encoded) = Bytes::try_from(packet) else {
            continue;
        };
        let mut again = encoded.slice(4..);
        let decoded = Packet::try_from(&mut again)
            .unwrap_or_else(|e| panic!("re-encoded packet does not decode ({e}): {debug}"));
        // INIT and VERSION extensions are a map: their order is not kept.
        let unordered = matches!(decoded, Packet::Init(_) | Packet::Version(_));
        let re_encoded = Bytes::try_from(decoded).expect("a decoded packet encodes");
        if unordered {
            assert_eq!(
                encoded.len(),
                re_encoded.len(),
                "encoding is not stable: {debug}"
            );
        } else {
            assert_eq!(encoded, re_encoded, "encoding is not stable: {debug}");
        }
    }
});
